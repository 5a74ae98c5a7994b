"""Helpers for the appliance tests: release wheels built from this checkout, and nodes in directories.

A "node in a directory" is what ``silbato install --root DIR`` makes: DIR/etc/silbato,
DIR/var/lib/silbato and DIR/opt/silbato/releases/<version>/venv, with the privileged
commands recorded instead of run. Wheels are built offline (``--no-build-isolation``,
with the setuptools of the test environment) from a copy of the working tree whose
version is set to a test version; the broken one has a doctor check that always fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "silbato"

_SKIP = shutil.ignore_patterns(".venv", ".git", ".hypothesis", ".pytest_cache", "*.egg-info", "__pycache__",
                               "build", "dist", "tests", "node_modules")

BROKEN_CHECK = '''

@check("release")
def check_broken_on_purpose(doctor):
    yield Result(FAIL, "release", "this test release is broken on purpose")
'''


def build_release(workdir: Path, version: str, *, broken: bool = False, store_patch: str = "") -> Path:
    """A wheel of this checkout at ``version``; ``broken``: its doctor always FAILs;
    ``store_patch``: code appended to its ``node/store.py`` (a migration, say)."""
    src = workdir / f"src-{version}"
    shutil.copytree(REPO, src, ignore=_SKIP)
    init = src / "node" / "__init__.py"
    text = init.read_text()
    start = text.index("__version__ = ")
    end = text.index("\n", start)
    init.write_text(text[:start] + f'__version__ = "{version}"' + text[end:])
    if broken:
        with open(src / "node" / "appliance" / "doctor.py", "a") as fh:
            fh.write(BROKEN_CHECK)
    if store_patch:
        with open(src / "node" / "store.py", "a") as fh:
            fh.write(store_patch)
    out = workdir / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(src)], check=True, capture_output=True)
    wheel = out / f"silbato-{version}-py3-none-any.whl"
    assert wheel.is_file(), sorted(out.iterdir())
    return wheel


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without SILBATO_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    env.update(extra)
    return env


def silbato(*args, exe: Path = EXE, check: bool = True, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``silbato`` command (by default this checkout's) and return the finished process."""
    # cwd "/": "python -c" puts the working directory first on sys.path, and the checkout has node/.
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                            env=env or clean_env(), stdin=subprocess.DEVNULL, cwd="/")
    if check and result.returncode != 0:
        raise AssertionError(f"silbato {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def installed(root: Path) -> Path:
    """The current release's ``silbato`` under ``root``."""
    return root / "opt" / "silbato" / "current" / "venv" / "bin" / "silbato"


def current(root: Path) -> str:
    return os.readlink(root / "opt" / "silbato" / "current")


def copy_system_units(root: Path) -> None:
    """``systemd-analyze verify --root`` needs the units ours depend on (sysinit.target...) in the root."""
    for base in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if base.is_dir():
            shutil.copytree(base, root / "usr" / "lib" / "systemd" / "system", dirs_exist_ok=True, symlinks=True)
            return
    raise AssertionError("no systemd units on this machine: install the systemd package")


def add_roster(roots: dict[int, Path], organizer, block: str = "elm-st") -> dict:
    """Sign a roster of the nodes under ``roots`` (node id -> root), install it on each; return it."""
    from node.protocol.keys import SigningKey, sign_roster

    nodes = []
    for i, root in roots.items():
        key = SigningKey.load(root / "var" / "lib" / "silbato" / "node.key")
        nodes.append({"id": i, "name": f"B{i}", "location": 100 + i, "place": f"Building {i}",
                      "public_key": key.public_b64})
    document = sign_roster({"block": block, "version": 1, "nodes": nodes}, organizer)
    for root in roots.values():
        (root / "etc" / "silbato" / "organizer.pub").write_text(organizer.public_b64 + "\n")
        path = root / "roster.json"
        path.write_text(json.dumps(document))
        silbato("--config", root / "etc" / "silbato" / "silbato.toml", "roster", "install", path)
    return document
