"""A release: one wheel of Silbato, installed in its own virtual environment.

``build_wheel(source)`` turns what ``--from`` names into a wheel file: a ``.whl`` is used
as it is; a source tree (a directory with ``pyproject.toml``) or a git URL
(``https://.../silbato.git``, ``git+https://...@v0.2.0``, ``file:///srv/silbato.git``) is
built with ``pip wheel``. Building happens once, on the machine that runs the command;
``silbato fleet update`` ships the same wheel to every node.

``install(layout, wheel)`` makes ``<root>/opt/silbato/releases/<version>/venv``:

1. a venv (``--without-pip``) from the base interpreter;
2. the wheel's dependencies, reused from an installed environment (by default the one
   running this command, which on a node is the current release): every distribution the
   wheel needs, and pip, is hard-linked (copied across file systems) file by file from its
   ``RECORD``, so a node updates offline, in seconds, and each release still owns its files;
3. the wheel itself, with ``pip install --no-deps --no-index``;
4. ``pip check``. If a dependency is missing or too old, pip installs the wheel again with
   its dependencies from the package index (or ``PIP_FIND_LINKS``).

A release directory counts only once its ``.complete`` marker is written: a half-built
one (power cut) is removed and built again.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

from node.errors import SilbatoError
from node.appliance.host import Layout, base_python

Say = Callable[[str], None]
COMPLETE = ".complete"
PIP_QUIET = ["--disable-pip-version-check", "--no-input", "-q"]


class ReleaseError(SilbatoError):
    """A release could not be built or installed."""


def wheel_version(wheel: Path) -> str:
    """``silbato-0.2.0-py3-none-any.whl`` -> ``0.2.0``; raises ``ReleaseError`` for another package."""
    parts = Path(wheel).name.split("-")
    if len(parts) < 5 or parts[0].lower() != "silbato" or not Path(wheel).name.endswith(".whl"):
        raise ReleaseError(f"{wheel}: not a Silbato wheel (expected silbato-<version>-py3-none-any.whl)")
    return parts[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip(python: str | Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _tail(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit {result.returncode}"


def _build_isolation_args() -> list[str]:
    """Build with the installed setuptools when it is new enough, so no network is needed."""
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 77 else []


def is_git_url(source: str) -> bool:
    return source.startswith(("git+", "git@", "ssh://", "git://")) or source.endswith(".git") or \
        (source.startswith(("http://", "https://", "file://")) and ".git" in source)


def build_wheel(source: str, outdir: Path, *, say: Say = lambda _: None) -> Path:
    """The wheel for ``source`` (a wheel file, a source tree or a git URL), in ``outdir`` if built."""
    path = Path(source)
    if source.endswith(".whl"):
        if not path.is_file():
            raise ReleaseError(f"{source}: no such wheel")
        wheel_version(path)
        return path
    if path.is_dir():
        if not (path / "pyproject.toml").is_file():
            raise ReleaseError(f"{source}: not a source tree (no pyproject.toml)")
        target = str(path.absolute())
    elif is_git_url(source):
        target = source if source.startswith("git+") else "git+" + source
    else:
        raise ReleaseError(f"{source}: expected a wheel file, a source directory or a git URL")
    outdir.mkdir(parents=True, exist_ok=True)
    before = set(outdir.glob("silbato-*.whl"))
    say(f"building a wheel from {source}")
    result = _pip(sys.executable, "wheel", *PIP_QUIET, "--no-deps", *_build_isolation_args(),
                  "--wheel-dir", str(outdir), target)
    if result.returncode != 0:
        raise ReleaseError(f"{source}: building a wheel failed: {_tail(result)}")
    built = sorted(set(outdir.glob("silbato-*.whl")) - before) or sorted(outdir.glob("silbato-*.whl"))
    if not built:
        raise ReleaseError(f"{source}: pip built no silbato wheel")
    return built[-1]


# -- reusing installed dependencies -------------------------------------------------------

def _wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if name is None:
            raise ReleaseError(f"{wheel}: no METADATA in the wheel")
        message = email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))
    return message.get_all("Requires-Dist") or []


def _requirement_class():
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    return Requirement


def dependency_closure(requirements: Iterable[str], site: Path) -> tuple[list[metadata.Distribution], list[str]]:
    """The distributions in ``site`` that ``requirements`` need, transitively, and pip.

    Returns ``(distributions, missing)``: ``missing`` names each requirement that ``site``
    does not satisfy (absent, or a version outside the specifier).
    """
    Requirement = _requirement_class()
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])
                 if d.metadata["Name"]}
    chosen: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in requirements]
    todo.append(("pip", frozenset()))  # so the release can install the next one
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        text, extras = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        key = _canonical(req.name)
        dist = installed.get(key)
        if dist is None or (req.specifier and not req.specifier.contains(dist.version, prereleases=True)):
            missing.append(str(req))
            continue
        if (key, frozenset(req.extras)) in seen:
            continue
        seen.add((key, frozenset(req.extras)))
        chosen[key] = dist
        todo.extend((r, frozenset(req.extras)) for r in dist.requires or [])
    return list(chosen.values()), missing


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_distributions(dists: Iterable[metadata.Distribution], site: Path, target: Path) -> int:
    """Hard-link (or copy) each distribution's files listed in its RECORD into ``target``.

    Files outside site-packages (console scripts in ``bin/``) are left out: their first line
    names the old interpreter. Compiled ``__pycache__`` files come along, since ``/opt`` is
    read-only to the services. Returns the number of files.
    """
    count = 0
    for dist in dists:
        for entry in dist.files or []:
            rel = Path(str(entry))
            if rel.is_absolute() or ".." in rel.parts:
                continue
            src = site / rel
            if src.is_file():
                _link_or_copy(src, target / rel)
                count += 1
    return count


def site_packages(venv: Path) -> Path:
    """The site-packages directory of ``venv`` (for this interpreter's version)."""
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def running_site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def is_complete(release: Path) -> bool:
    return (release / COMPLETE).is_file()


def install(layout: Layout, wheel: Path, *, deps_from: Path | None = None, say: Say = lambda _: None,
            python: str | None = None) -> Path:
    """Install ``wheel`` as ``releases/<version>`` with its own venv; return the release directory.

    ``deps_from``: a site-packages directory to reuse dependencies from (default: the one
    running this code). A complete release of the same version is reused as it is.
    """
    version = wheel_version(wheel)
    release = layout.release(version)
    if is_complete(release):
        say(f"release {version}: already installed at {release}")
        return release
    if release.exists():
        say(f"release {version}: removing an unfinished install")
        shutil.rmtree(release)
    release.mkdir(parents=True)
    try:
        _build_venv(release, wheel, deps_from or running_site_packages(), python or base_python(), say)
        shutil.copy2(wheel, release / Path(wheel).name)  # the exact bits, for the record and a reinstall
        (release / COMPLETE).write_text(version + "\n")
    except BaseException:
        shutil.rmtree(release, ignore_errors=True)
        raise
    say(f"release {version}: installed at {release}")
    return release


def _build_venv(release: Path, wheel: Path, deps_from: Path, python: str, say: Say) -> None:
    venv = release / "venv"
    result = subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ReleaseError(f"cannot create a virtual environment with {python}: {_tail(result)}")
    target = site_packages(venv)
    dists, missing = dependency_closure(_wheel_requirements(wheel), deps_from)
    files = copy_distributions(dists, deps_from, target)
    vpython = venv / "bin" / "python"
    if not (target / "pip").is_dir():
        # No pip to reuse (an unusual environment): bootstrap one.
        result = subprocess.run([str(vpython), "-m", "ensurepip", "--default-pip"], capture_output=True, text=True)
        if result.returncode != 0:
            raise ReleaseError(f"cannot install pip into {venv}: {_tail(result)}")
    say(f"release {wheel_version(wheel)}: reused {len(dists)} installed distributions ({files} files)"
        + (f"; not installed here: {', '.join(missing)}" if missing else ""))
    result = _pip(vpython, "install", *PIP_QUIET, "--no-deps", "--no-index", str(wheel))
    if result.returncode != 0:
        raise ReleaseError(f"pip could not install {Path(wheel).name}: {_tail(result)}")
    check = _pip(vpython, "check", "--disable-pip-version-check")
    if check.returncode != 0 or missing:
        say(f"release {wheel_version(wheel)}: installing missing dependencies with pip")
        result = _pip(vpython, "install", *PIP_QUIET, str(wheel))
        if result.returncode != 0:
            raise ReleaseError(f"the dependencies of {Path(wheel).name} could not be installed: {_tail(result)}")


def share_dir(release: Path | None = None) -> Path:
    """Where the units and Wi-Fi templates of ``release`` are (default: the running code's).

    A wheel installs them under ``<venv>/share/silbato``; a source checkout has them at
    its top level.
    """
    if release is not None:
        return release / "venv" / "share" / "silbato"
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "systemd").is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "silbato"


def temporary_dir(prefix: str = "silbato-release-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
