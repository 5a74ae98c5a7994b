"""The units in systemd/, as `silbato install --root` installs them: they verify, and score as the README says.

`systemd-analyze verify --root=DIR` checks the units inside DIR (ExecStart must exist
there, which the installed release provides), so the system's own units are copied into
DIR for the dependencies (sysinit.target, ...). `systemd-analyze security --offline=yes`
scores each unit file without a running systemd.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import REPO, copy_system_units, silbato

LIMITS = {"silbato-node.service": 1.0, "silbato-web.service": 1.5, "silbato-gateway.service": 1.5,
          "silbato-bridge.service": 1.5}
README = (REPO / "docs" / "appliance.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def root(tmp_path_factory, release_wheels):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: add systemd to .ci/apt-packages"
    root = tmp_path_factory.mktemp("root")
    silbato("install", "--root", root, "--from", release_wheels["base"])
    copy_system_units(root)
    return root


def analyze(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("unit", ["silbato-node.service", "silbato-web.service", "silbato-gateway.service",
                                  "silbato-bridge.service", "silbato-purge.service", "silbato-purge.timer"])
def test_the_installed_unit_verifies(root, unit):
    result = analyze("verify", f"--root={root}", unit)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), \
        f"{unit}:\n{result.stdout}{result.stderr}"


def test_verify_would_notice_a_broken_unit(root):
    broken = root / "etc" / "systemd" / "system" / "silbato-broken.service"
    broken.write_text("[Service]\nExecStart=/opt/silbato/nowhere\nNoSuchSetting=1\n")
    try:
        result = analyze("verify", f"--root={root}", "silbato-broken.service")
    finally:
        broken.unlink()
    assert result.returncode != 0 and "NoSuchSetting" in result.stderr


def exposure(root: Path, unit: str) -> float:
    result = analyze("security", "--offline=yes", f"--root={root}", "--no-pager", unit)
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match[1])


@pytest.mark.parametrize("unit", sorted(LIMITS))
def test_the_exposure_is_within_the_limit_and_in_the_readme(root, unit):
    score = exposure(root, unit)
    assert score <= LIMITS[unit], f"{unit} scores {score}, over {LIMITS[unit]}"
    assert f"| `{unit}` | {score} |" in README, f"README's hardening table must say {unit} scores {score}"


def test_the_node_keeps_the_devices_it_needs_and_nothing_else():
    text = (REPO / "systemd" / "silbato-node.service").read_text()
    allowed = set(re.findall(r"^DeviceAllow=(\S+) rw$", text, re.M))
    assert allowed == {"char-ttyACM", "char-ttyUSB", "char-gpiochip", "char-alsa"}
    for line in ("DevicePolicy=closed", "PrivateNetwork=yes", "Type=notify", "Restart=always",
                 "WorkingDirectory=/var/lib/silbato", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "SystemCallFilter=@system-service"):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+$", text, re.M)
    web = (REPO / "systemd" / "silbato-web.service").read_text()
    assert "PrivateDevices=yes" in web and "DeviceAllow" not in web


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (REPO / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_page_runs_as_its_own_user_and_writes_only_the_database_folder():
    node, web = _directives("silbato-node.service"), _directives("silbato-web.service")
    assert node["User"] == ["silbato"] and web["User"] == ["silbato-web"], "two users: the page is not the node"
    assert web["Group"] == ["silbato"] and "SupplementaryGroups" not in web
    assert web["StateDirectory"] == ["silbato-web"], "StateDirectory=silbato would hand the node's folder to the page"
    assert web["ReadWritePaths"] == ["/var/lib/silbato/db", "/var/lib/silbato/evidence"] and web["ProtectSystem"] == ["strict"]
