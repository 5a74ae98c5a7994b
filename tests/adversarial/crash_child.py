"""The node that ``test_crash_safety.py`` kills: report and withdraw alerts until ``kill -9``.

    python crash_child.py ROOT      # ROOT as written by adversary.install; this is node 1

It prints ``started`` once the node is up, then one line after each committed change:
``reported <alert id>`` when ``Node.report`` returned (the alert, its event and its
signed frame are committed), ``cancelled <alert id>`` when ``Node.act`` returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

from node import config as config_mod
from node.daemon.node import Node
from node.hardware.devices import mock_factory


def main(root: Path) -> None:
    config = config_mod.from_mapping({"node.state_dir": str(root / "node1"),
                                      "node.organizer_key": str(root / "organizer.pub")}, source="crash")
    node = Node(config, pin_factory=mock_factory()).start()
    print("started", flush=True)
    while True:
        alert = node.report()
        print(f"reported {alert.id}", flush=True)
        node.act("cancel", alert.id)
        print(f"cancelled {alert.id}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
