"""The README's commands in .ci/: the demo sets up only what it uses; apt waits for its lock.

apt-get, dpkg, id, sleep and the venv's python are fakes on PATH here: nothing is installed.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parent.parent / ".ci"


def packages(name: str) -> list[str]:
    lines = (CI / name).read_text().splitlines()
    return [word for line in lines if (word := line.split("#", 1)[0].strip())]


@pytest.mark.parametrize("script", ["setup", "demo", "test", "run"])
def test_the_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(CI / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_demo_needs_no_package_the_tests_do_not():
    assert set(packages("apt-packages-demo")) <= set(packages("apt-packages"))
    # the tests' browser, sshd and systemd are not the demo's
    assert not {"chromium", "openssh-server", "systemd"} & set(packages("apt-packages-demo"))


FAKES = {
    # the first apt-get finds the dpkg lock held, as while unattended-upgrades runs
    "apt-get": """#!/bin/sh
echo "$*" >> "$LOG/apt-get"
if [ ! -e "$LOG/apt-locked-once" ]; then
  touch "$LOG/apt-locked-once"
  echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (unattended-upgr)" >&2
  echo "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?" >&2
  exit 100
fi
""",
    "dpkg": "#!/bin/sh\nexit 1\n",  # nothing is installed
    "id": "#!/bin/sh\necho 0\n",
    "sleep": "#!/bin/sh\necho \"$*\" >> \"$LOG/sleep\"\n",
}
VENV_PYTHON = """#!/bin/sh
if [ "$1" = -m ]; then echo "$*" >> "$LOG/pip"; fi
"""


@pytest.fixture
def checkout(tmp_path):
    """A copy of .ci/ with a .venv whose python only notes what pip was asked; fakes on PATH."""
    repo, fakes, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "log"
    shutil.copytree(CI, repo / ".ci")
    for folder in (fakes, log, repo / ".venv" / "bin"):
        folder.mkdir(parents=True)
    for path, text in [*((fakes / name, text) for name, text in FAKES.items()),
                       (repo / ".venv" / "bin" / "python", VENV_PYTHON)]:
        path.write_text(text)
        path.chmod(0o755)

    def run(*args):
        env = {"PATH": f"{fakes}:/usr/bin:/bin", "LOG": str(log)}
        result = subprocess.run(["bash", str(repo / ".ci" / "setup"), *args], capture_output=True, text=True,
                                env=env, timeout=60)
        calls = {f.name: f.read_text().splitlines() for f in log.iterdir() if f.is_file()}
        return result, calls

    return run


def test_the_test_setup_waits_for_apt_s_lock_and_installs_everything(checkout):
    result, calls = checkout()
    assert result.returncode == 0, result.stderr
    assert ("setup: waiting for another package manager to finish: /var/lib/dpkg/lock-frontend is held by "
            "process 42 (unattended-upgr) (0 min so far)") in result.stderr
    # update was locked, then retried; the install got every test package
    assert calls["apt-get"][0] == calls["apt-get"][1] == "-q -y update"
    assert calls["apt-get"][2] == "-q -y install " + " ".join(packages("apt-packages"))
    assert calls["sleep"] == ["5"]
    assert calls["pip"][-1] == "-m pip install --progress-bar off -e .[test]"
    # one line per step, so a long step is never silent
    for step in ("updating apt's package lists", "installing Debian packages:", "upgrading pip",
                 "installing Silbato with its test extras", "ready"):
        assert f"setup: {step}" in result.stderr


def test_the_demo_setup_installs_silbato_alone(checkout):
    result, calls = checkout("demo")
    assert result.returncode == 0, result.stderr
    assert "apt-get" not in calls  # no Debian package: the demo needs none
    assert calls["pip"][-1] == "-m pip install --progress-bar off -e ."


def test_a_failing_apt_shows_its_log(checkout, tmp_path):
    (tmp_path / "bin" / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package espeak-ng' >&2\n"
                                              "exit 100\n")
    result, calls = checkout()
    assert result.returncode == 1
    assert "E: Unable to locate package espeak-ng" in result.stderr
    assert "setup: apt-get update failed (log above)" in result.stderr
    assert "pip" not in calls


def test_the_demo_and_the_tests_set_up_their_own_way():
    assert "bash .ci/setup demo\n" in (CI / "demo").read_text()
    assert "bash .ci/setup\n" in (CI / "test").read_text()
