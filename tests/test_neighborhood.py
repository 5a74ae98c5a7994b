"""The neighborhood roster (node/protocol/neighborhood.py) and its commands: signed, checked, installed."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from node.cli import cli
from node.errors import RosterError
from node.protocol.alerts import State
from node.protocol.keys import SigningKey, public_bytes
from node.protocol.neighborhood import (NeighborhoodRoster, Policy, block_entry, code, install_neighborhood,
                                        sign_neighborhood)


@pytest.fixture
def hood():
    organizer = SigningKey.generate()
    blocks = {name: SigningKey.generate() for name in ("elm-st", "oak-st", "far-st")}
    body = {"name": "eastside", "version": 1, "blocks": [
        block_entry("elm-st", blocks["elm-st"].public, "Elm St 100-200", ["oak-st"]),
        block_entry("oak-st", blocks["oak-st"].public, "Oak St 1-99"),
        block_entry("far-st", blocks["far-st"].public, "Far St")]}
    return organizer, blocks, body


def test_a_signed_roster_verifies_and_names_its_blocks_and_neighbors(hood):
    organizer, blocks, body = hood
    roster = NeighborhoodRoster.parse(sign_neighborhood(body, organizer), organizer.public)
    assert roster.name == "eastside" and set(roster.blocks) == {"elm-st", "oak-st", "far-st"}
    assert roster.neighbors("oak-st", "elm-st") and roster.neighbors("elm-st", "oak-st")  # either side lists it
    assert not roster.neighbors("elm-st", "far-st")
    assert roster.by_code[code("oak-st")].area == "Oak St 1-99"
    assert public_bytes(roster.block("elm-st").organizer_key) == blocks["elm-st"].public_raw
    policy = Policy()
    assert roster.crosses("oak-st", "elm-st", policy) and not roster.crosses("far-st", "elm-st", policy)
    assert roster.crosses("far-st", "elm-st", Policy(to="all"))


def test_a_tampered_or_foreign_signed_roster_is_refused(hood):
    organizer, _, body = hood
    document = sign_neighborhood(body, organizer)
    tampered = copy.deepcopy(document)
    tampered["neighborhood"]["blocks"][2]["neighbors"] = ["elm-st"]   # far-st makes itself a neighbor
    with pytest.raises(RosterError, match="bad signature"):
        NeighborhoodRoster.parse(tampered, organizer.public)
    with pytest.raises(RosterError, match="bad signature"):
        NeighborhoodRoster.parse(document, SigningKey.generate().public)
    # A block roster's signature (no domain) is no neighborhood roster's.
    from node.protocol.keys import _canonical, b64
    raw = {"neighborhood": body, "signature": b64(organizer.sign(_canonical(body)))}
    with pytest.raises(RosterError, match="bad signature"):
        NeighborhoodRoster.parse(raw, organizer.public)


@pytest.mark.parametrize("change, field", [
    (lambda b: b["blocks"][0].update(name="a/b"), "blocks[0].name"),
    (lambda b: b["blocks"][0].update(neighbors=["nowhere"]), "blocks[0].neighbors"),
    (lambda b: b["blocks"][1].update(name="elm-st"), "blocks[1].name"),
    (lambda b: b["blocks"][1].update(organizer_key="xx"), "blocks[1].organizer_key"),
    (lambda b: b["blocks"][2].update(revoked="yes"), "blocks[2].revoked"),
    (lambda b: b.update(version=0), "'version'"),
    (lambda b: b.update(policy={"states": ["expired"]}), "policy.states"),
    (lambda b: b.update(policy={"to": "everyone"}), "policy.to"),
])
def test_a_bad_body_is_refused_naming_the_field(hood, change, field):
    organizer, _, body = hood
    change(body)
    with pytest.raises(RosterError) as exc:
        sign_neighborhood(body, organizer)
    assert field in str(exc.value)


def test_install_refuses_older_versions_and_other_neighborhoods_and_revocation_reaches_the_roster(hood, tmp_path):
    organizer, _, body = hood
    path = tmp_path / "neighborhood.json"
    install_neighborhood(sign_neighborhood(body, organizer), organizer.public, path, name="eastside")
    newer = {**copy.deepcopy(body), "version": 2}
    newer["blocks"][1]["revoked"] = True
    installed = install_neighborhood(sign_neighborhood(newer, organizer), organizer.public, path)
    assert installed.block("oak-st").revoked
    with pytest.raises(RosterError, match="older than installed version 2"):
        install_neighborhood(sign_neighborhood(body, organizer), organizer.public, path)
    with pytest.raises(RosterError, match="other contents"):
        install_neighborhood(sign_neighborhood({**body, "version": 2}, organizer), organizer.public, path)
    with pytest.raises(RosterError, match="neighborhood.name is 'westside'"):
        install_neighborhood(sign_neighborhood({**body, "version": 3}, organizer), organizer.public, path,
                             name="westside")
    assert NeighborhoodRoster.load(path, organizer.public).version == 2


def test_the_commands_make_sign_install_and_show_a_roster(tmp_path):
    run = CliRunner().invoke
    key, body, signed = tmp_path / "hood.key", tmp_path / "hood.json", tmp_path / "hood.signed"
    for name in ("elm", "oak"):
        assert run(cli, ["roster", "keygen", str(tmp_path / f"{name}.key")]).exit_code == 0
    assert run(cli, ["neighborhood", "init", "eastside", "--key", str(key), "--out", str(body)]).exit_code == 0
    assert run(cli, ["neighborhood", "add-block", str(body), "elm-st", "--organizer-key",
                     str(tmp_path / "elm.key.pub"), "--area", "Elm St"]).exit_code == 0
    result = run(cli, ["neighborhood", "add-block", str(body), "oak-st", "--organizer-key",
                       str(tmp_path / "oak.key.pub"), "--neighbor", "nowhere"])
    assert result.exit_code == 1 and "'nowhere' is not a block of this neighborhood" in result.output
    assert run(cli, ["neighborhood", "add-block", str(body), "oak-st", "--organizer-key",
                     str(tmp_path / "oak.key.pub"), "--neighbor", "elm-st"]).exit_code == 0
    result = run(cli, ["neighborhood", "sign", str(body), "--key", str(key) + ".pub"])
    assert result.exit_code == 1 and "public key" in result.output
    assert run(cli, ["neighborhood", "sign", str(body), "--key", str(key), "--out", str(signed)]).exit_code == 0
    config = tmp_path / "silbato.toml"
    config.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[neighborhood]\nname = "eastside"\norganizer_key = "{key}.pub"\n')
    result = run(cli, ["--config", str(config), "neighborhood", "install", str(signed)])
    assert result.exit_code == 0, result.output
    shown = run(cli, ["--config", str(config), "neighborhood", "show"]).output
    assert "neighborhood 'eastside', version 3" in shown and f"{code('oak-st'):08x}" in shown
    assert "confirmed, all_clear, cancelled to neighbors" in shown
    document = json.loads(signed.read_text())
    document["neighborhood"]["blocks"][0]["area"] = "Elsewhere"
    signed.write_text(json.dumps(document))
    result = run(cli, ["--config", str(config), "neighborhood", "install", str(signed)])
    assert result.exit_code == 1 and "bad signature" in result.output and "Traceback" not in result.output


def test_a_bad_crossing_setting_is_named(tmp_path):
    from node import config as config_mod
    from node.errors import ConfigError
    from node.protocol.neighborhood import policy_from_settings

    cfg = config_mod.from_mapping({"neighborhood.cross": "confirmed,raided"})
    with pytest.raises(ConfigError, match="'raided'.*neighborhood.cross"):
        policy_from_settings(cfg)
    assert policy_from_settings(config_mod.from_mapping({})).states == {State.CONFIRMED, State.ALL_CLEAR,
                                                                          State.CANCELLED}
