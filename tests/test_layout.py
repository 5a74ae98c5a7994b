"""The layout is the architecture: each folder one kind of code, each hardware library one importer.

Reads every module's imports (with ``ast``, without importing anything) and checks the
boundaries that README.md's "Where things live" and ../shared/DESIGN.md promise.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for top in ("node", "web") for p in (REPO / top).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {module_name(p): imports(p) for p in SOURCES}


def importers(prefixes: tuple[str, ...]) -> set[str]:
    return {mod for mod, found in IMPORTS.items()
            if any(name == p or name.startswith(p + ".") for name in found for p in prefixes)}


def under(package: str) -> set[str]:
    return {mod for mod in IMPORTS if mod == package or mod.startswith(package + ".")}


def test_the_scan_sees_the_layout():
    # A scan that found nothing would pass every test below.
    assert {"node.daemon.node", "node.radio.link", "node.hardware.devices", "node.protocol.wire",
            "node.appliance.update", "web"} <= set(IMPORTS)
    assert "node.protocol.alerts" in IMPORTS["node.daemon.desk"]


@pytest.mark.parametrize("library, home", [
    ("meshtastic", "node.radio"),
    ("serial", "node.radio"),
    ("google.protobuf", "node.radio"),
    ("gpiozero", "node.hardware"),
])
def test_each_hardware_library_has_one_home(library, home):
    outside = importers((library,)) - under(home)
    assert not outside, f"{library} is imported outside {home}: {sorted(outside)}"


def test_only_the_link_and_the_interface_touch_meshtastic_interfaces():
    # The simulated radio may use meshtastic's protobuf classes, never its interfaces: a node
    # cannot tell it from a real radio only if it speaks to the library from the other side.
    users = importers(("meshtastic.serial_interface", "meshtastic.tcp_interface", "meshtastic.mesh_interface"))
    assert users <= {"node.radio.interface", "node.radio.link"}, sorted(users)
    assert importers(("meshtastic.serial_interface", "meshtastic.tcp_interface")) == {"node.radio.interface"}


def test_the_protocol_is_pure():
    allowed = {"node.protocol", "node.errors"}
    for mod in under("node.protocol"):
        inner = {name for name in IMPORTS[mod] if name.startswith("node.")}
        bad = {name for name in inner if not any(name == a or name.startswith(a + ".") for a in allowed)}
        assert not bad, f"{mod} imports {sorted(bad)}: the protocol takes no store, radio, pins or daemon"


def test_the_daemon_never_imports_the_appliance_tooling():
    bad = importers(("node.appliance",)) & (under("node.daemon") | under("node.protocol") | under("node.radio")
                                            | under("node.hardware") | {"node.store"})
    assert not bad, sorted(bad)


def test_the_web_process_never_imports_radio_hardware_or_daemon_code():
    bad = importers(("node.radio", "node.hardware", "node.daemon", "node.appliance")) & under("web")
    assert not bad, sorted(bad)


def test_the_gateway_never_imports_radio_hardware_daemon_or_appliance_code():
    # Like the page, the SMS gateway is a door to the outside: it works only through the store.
    assert "node.gateway.service" in IMPORTS, "the scan must see the gateway"
    bad = importers(("node.radio", "node.hardware", "node.daemon", "node.appliance", "web")) & under("node.gateway")
    assert not bad, sorted(bad)


def test_nothing_of_the_node_imports_the_gateway():
    # The daemon and the page never load the code that reads phone numbers.
    users = importers(("node.gateway",)) - under("node.gateway")
    assert users <= {"node.cli", "node.sim"}, sorted(users)   # the sim runs a gateway only with --sms


def test_the_bridge_never_imports_radio_hardware_daemon_or_appliance_code():
    # The bridge talks to a broker on the network: it works only through the store, and holds no key.
    assert "node.bridge.service" in IMPORTS, "the scan must see the bridge"
    bad = importers(("node.radio", "node.hardware", "node.daemon", "node.appliance", "node.protocol.keys", "web",
                     "node.gateway")) & under("node.bridge")
    assert not bad, sorted(bad)


def test_only_the_command_and_the_sim_run_the_bridge():
    # The daemon meets the bridge in the store (node.bridgequeue), never in code.
    users = importers(("node.bridge",)) - under("node.bridge")
    assert users <= {"node.cli", "node.sim"}, sorted(users)
