"""Shared fixtures. Keys are generated per test; no key material is ever committed."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.protocol.keys import Roster, SigningKey, sign_roster

BLOCK = "elm-st"


@dataclass
class RosterSetup:
    """An organizer key, node keys 1..4 and the roster they sign.

    Nodes 1..3 are active at locations 101..103 ("Building 1".."Building 3");
    node 4 (location 104) is on the roster but revoked.
    """

    root: Path                   # a fresh temporary directory for this test
    organizer: SigningKey
    keys: dict[int, SigningKey]  # node id -> key, including the revoked node 4
    body: dict                   # the unsigned roster body
    document: dict               # the signed roster document
    roster: Roster               # the parsed, verified roster

    @property
    def block(self) -> str:
        return self.roster.block

    def sign(self, **changes) -> dict:
        """A signed document for a copy of ``body`` with top-level ``changes`` (``version=2``)."""
        body = copy.deepcopy(self.body)
        body.update(changes)
        return sign_roster(body, self.organizer)


def _node(i: int, key: SigningKey, revoked: bool = False) -> dict:
    return {"id": i, "name": f"B{i}", "location": 100 + i, "place": f"Building {i}",
            "public_key": key.public_b64, "revoked": revoked}


@pytest.fixture
def roster_setup(tmp_path: Path) -> RosterSetup:
    organizer = SigningKey.generate()
    keys = {i: SigningKey.generate() for i in range(1, 5)}
    body = {"block": BLOCK, "version": 1,
            "nodes": [_node(i, keys[i], revoked=(i == 4)) for i in keys]}
    document = sign_roster(copy.deepcopy(body), organizer)
    return RosterSetup(tmp_path, organizer, keys, body, document,
                       Roster.parse(document, organizer.public))


@pytest.fixture(scope="session")
def release_wheels(tmp_path_factory) -> dict[str, Path]:
    """Wheels of this checkout: ``base`` (99.0.0), ``good`` (99.0.1) and ``broken`` (99.0.2, its doctor FAILs)."""
    from appliance import build_release

    workdir = tmp_path_factory.mktemp("releases")
    return {"base": build_release(workdir, "99.0.0"), "good": build_release(workdir, "99.0.1"),
            "broken": build_release(workdir, "99.0.2", broken=True)}


def pytest_sessionfinish(session, exitstatus):
    """With SILBATO_REQUIRE_ALL_TESTS=1 (set by .ci/test), a skipped test fails the run."""
    import os

    if os.environ.get("SILBATO_REQUIRE_ALL_TESTS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(report.nodeid for report in skipped[:5])
        reporter.write_line(f"FAILED: {len(skipped)} required test(s) skipped: {names}", red=True)
        session.exitstatus = 1
