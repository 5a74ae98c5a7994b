"""Key files and the organizer-signed roster."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

from node.errors import KeyFileError, RosterError
from node.protocol.keys import (Roster, SigningKey, b64, install_roster, load_identity, load_organizer_key, load_public,
                                sign_roster)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def force_sign(body, organizer: SigningKey) -> dict:
    """Sign any body as the docstring specifies (canonical JSON), bypassing sign_roster's shape check."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return {"roster": body, "signature": b64(organizer.sign(canonical))}


# -- key files ---------------------------------------------------------------------------


def test_created_key_file_is_0600_and_loads_back(tmp_path):
    path = tmp_path / "state" / "node.key"
    key = SigningKey.create(path)
    assert mode(path) == 0o600
    assert SigningKey.load(path).public_raw == key.public_raw


def test_load_refuses_a_key_readable_by_others(tmp_path):
    path = tmp_path / "node.key"
    SigningKey.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="mode is 0644; it must be 0600"):
        SigningKey.load(path)


@pytest.mark.parametrize("open_mode", [0o640, 0o620, 0o610, 0o604, 0o602, 0o601])
def test_load_refuses_any_group_or_other_bit(tmp_path, open_mode):
    path = tmp_path / "node.key"
    SigningKey.create(path)
    os.chmod(path, open_mode)
    with pytest.raises(KeyFileError, match=f"mode is {open_mode:04o}"):
        SigningKey.load(path)


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "node.key"
    SigningKey.create(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="a key exists already; it was not replaced"):
        SigningKey.create(path)
    assert path.read_bytes() == before


def test_create_with_force_replaces_the_key(tmp_path):
    path = tmp_path / "node.key"
    old = SigningKey.create(path)
    new = SigningKey.create(path, force=True)
    assert new.public_raw != old.public_raw
    assert SigningKey.load(path).public_raw == new.public_raw


def test_create_is_0600_even_over_a_stale_tmp_file(tmp_path):
    path = tmp_path / "node.key"
    stale = tmp_path / "node.key.tmp"
    stale.write_text("left over from a crash\n")
    os.chmod(stale, 0o644)
    SigningKey.create(path)
    assert mode(path) == 0o600


def test_load_missing_key_file(tmp_path):
    with pytest.raises(KeyFileError, match="not found"):
        SigningKey.load(tmp_path / "node.key")


def test_load_refuses_garbage(tmp_path):
    path = tmp_path / "node.key"
    path.write_text("not a key\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        SigningKey.load(path)


def test_load_public_reads_organizer_pub(tmp_path, roster_setup):
    path = tmp_path / "organizer.pub"
    path.write_text(roster_setup.organizer.public_b64 + "\n")
    assert load_public(path) == roster_setup.organizer.public


def test_load_public_refuses_short_key(tmp_path):
    path = tmp_path / "organizer.pub"
    path.write_text(b64(b"\x01" * 31) + "\n")
    with pytest.raises(KeyFileError, match="expected 32 bytes"):
        load_public(path)


def test_the_organizers_public_key_is_refused_for_signing_by_name(tmp_path):
    private = tmp_path / "organizer.key"
    key = SigningKey.create(private)
    public = tmp_path / "organizer.key.pub"
    public.write_text(key.public_b64 + "\n")
    os.chmod(public, 0o600)  # as a user who obeyed the mode complaint would
    with pytest.raises(KeyFileError, match="organizer.key.pub: that is the organizers' public key; "
                                           r"sign with the private key \(organizer.key\)$"):
        load_organizer_key(public)
    on_a_node = tmp_path / "organizer.pub"  # its copy on a node: no private key beside it
    on_a_node.write_text(key.public_b64 + "\n")
    with pytest.raises(KeyFileError, match=r"sign with the private key \(organizer.key\)$"):
        load_organizer_key(on_a_node)
    assert load_organizer_key(private).public_raw == key.public_raw


# -- signed roster -----------------------------------------------------------------------


def test_roster_round_trip(roster_setup):
    roster = Roster.parse(json.loads(json.dumps(roster_setup.document)), roster_setup.organizer.public)
    assert (roster.block, roster.version) == ("elm-st", 1)
    assert sorted(roster.members) == [1, 2, 3, 4]
    assert roster.place(102) == "Building 2"
    assert roster.member(4).revoked and not roster.member(1).revoked
    assert roster.find_key(roster_setup.keys[3].public_raw).id == 3


def test_the_public_roster_carries_no_place_and_verifies_on_its_own(roster_setup):
    """What a bridge node shows the neighborhood's broker: keys, ids and codes, never a place name."""
    roster = Roster.parse(roster_setup.document, roster_setup.organizer.public)
    public = json.loads(json.dumps(roster.public_document()))
    assert "Building" not in json.dumps(public) and all("place" not in n for n in public["roster"]["nodes"])
    marked = copy.deepcopy(roster_setup.body)
    marked["nodes"][0]["dispatcher"] = True
    marked["settings"] = {"supervision.period": 180}
    leaked = Roster.parse(sign_roster(marked, roster_setup.organizer), roster_setup.organizer.public).public_document()
    assert "dispatcher" not in json.dumps(leaked) and "settings" not in leaked["roster"]
    assert Roster.parse_public(leaked, roster_setup.organizer.public).dispatchers == frozenset()
    seen = Roster.parse_public(public, roster_setup.organizer.public)
    assert sorted(seen.members) == [1, 2, 3, 4] and seen.member(4).revoked and seen.place(102) == ""
    assert seen.member(2).verify(roster_setup.keys[2].sign(b"x"), b"x")
    # Altered, from another organizer, or with the places put back: refused.
    altered = copy.deepcopy(public)
    altered["roster"]["nodes"][3]["revoked"] = False
    for document, organizer in ((altered, roster_setup.organizer.public), (public, SigningKey.generate().public)):
        with pytest.raises(RosterError, match="bad signature"):
            Roster.parse_public(document, organizer)
    with pytest.raises(RosterError):
        Roster.parse_public({**roster_setup.document, "public_signature": public["public_signature"]},
                            roster_setup.organizer.public)
    # The two signatures cannot stand in for each other (the public one has its own prefix).
    swapped = {"roster": roster_setup.document["roster"], "signature": public["public_signature"]}
    with pytest.raises(RosterError, match="bad signature"):
        Roster.parse(swapped, roster_setup.organizer.public)
    # A roster signed before public rosters existed has none to show.
    old = {k: v for k, v in roster_setup.document.items() if k != "public_signature"}
    assert Roster.parse(old, roster_setup.organizer.public).public_document() is None


def test_roster_member_verifies_its_own_signatures(roster_setup):
    member = roster_setup.roster.member(2)
    assert member.verify(roster_setup.keys[2].sign(b"hello"), b"hello")
    assert not member.verify(roster_setup.keys[1].sign(b"hello"), b"hello")


def test_non_ascii_place_names_survive_signing(roster_setup):
    body = copy.deepcopy(roster_setup.body)
    body["nodes"][0]["place"] = "Edificio Ñandú 한"
    document = json.loads(json.dumps(sign_roster(body, roster_setup.organizer)))
    assert Roster.parse(document, roster_setup.organizer.public).place(101) == "Edificio Ñandú 한"


@pytest.mark.parametrize("field, value", [("place", "Building 9"), ("revoked", False), ("location", 109)])
def test_roster_altered_after_signing_is_rejected(roster_setup, field, value):
    document = copy.deepcopy(roster_setup.document)
    document["roster"]["nodes"][3][field] = value
    with pytest.raises(RosterError, match="bad signature"):
        Roster.parse(document, roster_setup.organizer.public)


def test_roster_from_another_organizer_is_rejected(roster_setup):
    with pytest.raises(RosterError, match="bad signature"):
        Roster.parse(roster_setup.document, SigningKey.generate().public)


@pytest.mark.parametrize("signature", ["", "!!not base64!!", b64(b"\x00" * 63), None])
def test_roster_with_bad_signature_field_is_rejected(roster_setup, signature):
    document = dict(roster_setup.document, signature=signature)
    with pytest.raises(RosterError):
        Roster.parse(document, roster_setup.organizer.public)


@pytest.mark.parametrize("document", [None, [], {}, {"roster": "x", "signature": ""}])
def test_roster_document_of_wrong_shape_is_rejected(roster_setup, document):
    with pytest.raises(RosterError, match="expected an object"):
        Roster.parse(document, roster_setup.organizer.public)


# -- malformed bodies, even when the organizer signed them ---------------------------------


def _dup_id(body):
    body["nodes"][1]["id"] = 1


def _dup_location(body):
    body["nodes"][1]["location"] = 101


def _bad_base64(body):
    body["nodes"][0]["public_key"] = "not*base64"


def _short_key(body):
    body["nodes"][0]["public_key"] = b64(b"\x02" * 16)


def _no_nodes(body):
    body["nodes"] = []


def _zero_version(body):
    body["version"] = 0


def _bool_version(body):
    body["version"] = True


def _empty_block(body):
    body["block"] = ""


def _id_out_of_range(body):
    body["nodes"][0]["id"] = 65536


def _entry_not_object(body):
    body["nodes"][0] = "B1"


def _missing(field):
    def change(body):
        del body["nodes"][0][field]
    change.__name__ = f"_missing_{field}"
    return change


MALFORMED = [_dup_id, _dup_location, _bad_base64, _short_key, _no_nodes, _zero_version, _bool_version,
             _empty_block, _id_out_of_range, _entry_not_object,
             *[_missing(f) for f in ("id", "name", "location", "place", "public_key")]]


@pytest.mark.parametrize("change", MALFORMED, ids=lambda f: f.__name__.strip("_"))
def test_malformed_signed_roster_is_rejected(roster_setup, change):
    body = copy.deepcopy(roster_setup.body)
    change(body)
    with pytest.raises(RosterError):
        Roster.parse(force_sign(body, roster_setup.organizer), roster_setup.organizer.public)


@pytest.mark.parametrize("change", MALFORMED, ids=lambda f: f.__name__.strip("_"))
def test_sign_roster_refuses_a_malformed_body(roster_setup, change):
    body = copy.deepcopy(roster_setup.body)
    change(body)
    with pytest.raises(RosterError):
        sign_roster(body, roster_setup.organizer)


# -- installing ------------------------------------------------------------------------------


def test_install_writes_a_roster_that_loads(roster_setup):
    path = roster_setup.root / "state" / "roster.json"
    install_roster(roster_setup.document, roster_setup.organizer.public, path)
    loaded = Roster.load(path, roster_setup.organizer.public)
    assert (loaded.block, loaded.version, sorted(loaded.members)) == ("elm-st", 1, [1, 2, 3, 4])


def test_install_refuses_a_lower_version(roster_setup):
    path = roster_setup.root / "roster.json"
    install_roster(roster_setup.sign(version=3), roster_setup.organizer.public, path)
    with pytest.raises(RosterError, match="older than installed version 3"):
        install_roster(roster_setup.sign(version=2), roster_setup.organizer.public, path)
    assert Roster.load(path, roster_setup.organizer.public).version == 3


def test_install_refuses_another_block(roster_setup):
    path = roster_setup.root / "roster.json"
    install_roster(roster_setup.document, roster_setup.organizer.public, path)
    with pytest.raises(RosterError, match="not this node's block"):
        install_roster(roster_setup.sign(block="oak-ave", version=2), roster_setup.organizer.public, path)
    assert Roster.load(path, roster_setup.organizer.public).block == "elm-st"


@pytest.mark.parametrize("version", [1, 2])
def test_install_accepts_equal_or_higher_version(roster_setup, version):
    path = roster_setup.root / "roster.json"
    install_roster(roster_setup.document, roster_setup.organizer.public, path)
    install_roster(roster_setup.sign(version=version), roster_setup.organizer.public, path)
    assert Roster.load(path, roster_setup.organizer.public).version == version


def test_install_refuses_a_badly_signed_roster_and_writes_nothing(roster_setup):
    path = roster_setup.root / "roster.json"
    with pytest.raises(RosterError, match="bad signature"):
        install_roster(roster_setup.document, SigningKey.generate().public, path)
    assert not path.exists()


def test_install_with_this_node_s_key_refuses_a_roster_that_misses_or_revokes_it(roster_setup):
    path = roster_setup.root / "roster.json"
    organizer = roster_setup.organizer.public
    stranger = SigningKey.generate()
    with pytest.raises(RosterError, match=rf"does not list this node's key \({re.escape(stranger.public_b64)}\): "
                                          "ask the organizers to add it"):
        install_roster(roster_setup.document, organizer, path, node_key=stranger.public_raw)
    revoked = roster_setup.keys[4]
    with pytest.raises(RosterError, match=rf"lists this node's key \({re.escape(revoked.public_b64)}\) as B4, revoked"):
        install_roster(roster_setup.document, organizer, path, node_key=revoked.public_raw)
    assert not path.exists()
    installed = install_roster(roster_setup.document, organizer, path, node_key=roster_setup.keys[2].public_raw)
    assert installed.find_key(roster_setup.keys[2].public_raw).name == "B2" and path.exists()


def test_damaged_installed_roster_does_not_block_a_good_one(roster_setup):
    path = roster_setup.root / "roster.json"
    path.write_text("{ not json")
    install_roster(roster_setup.document, roster_setup.organizer.public, path)
    assert Roster.load(path, roster_setup.organizer.public).version == 1


def test_load_without_installed_roster(roster_setup):
    with pytest.raises(RosterError, match="no roster installed"):
        Roster.load(roster_setup.root / "roster.json", roster_setup.organizer.public)


# -- this node's identity from its settings ------------------------------------------------------


class Settings(dict):
    """The three settings load_identity reads, as node.config.Config offers them."""

    def __init__(self, root, key_file):
        super().__init__({"node.organizer_key": str(root / "organizer.pub")})
        self.key_file, self.roster_file = key_file, root / "roster.json"


def installed(roster_setup, node_id: int) -> Settings:
    root = roster_setup.root
    (root / "organizer.pub").write_text(roster_setup.organizer.public_b64 + "\n")
    install_roster(roster_setup.document, roster_setup.organizer.public, root / "roster.json")
    key_file = root / f"node{node_id}.key"
    key_file.write_text(b64(roster_setup.keys[node_id]._private.private_bytes_raw()) + "\n")
    os.chmod(key_file, 0o600)
    return Settings(root, key_file)


def test_load_identity_finds_this_node_and_refuses_a_revoked_or_unknown_key(roster_setup):
    me = load_identity(installed(roster_setup, 2))
    assert (me.me.id, me.me.place, me.roster.version) == (2, "Building 2", 1)
    revoked = installed(roster_setup, 4)
    with pytest.raises(RosterError, match="this node's key is revoked on roster v1"):
        load_identity(revoked)
    # A revoked node keeps its name and place (a host name, a spoken test), never its right to sign.
    assert load_identity(revoked, revoked_ok=True).me.name == "B4"
    stranger = Settings(roster_setup.root, roster_setup.root / "stranger.key")
    SigningKey.create(stranger.key_file)
    with pytest.raises(RosterError, match="this node's key is not on roster v1"):
        load_identity(stranger, revoked_ok=True)


def test_a_roster_larger_than_a_receipt_can_carry_is_refused_by_name(roster_setup):
    """Every roster node has a bit in each receipt; a roster that would not fit one is refused at
    signing and at load, not a crash when the first receipt is built."""
    from node.protocol import keys, wire

    body = copy.deepcopy(roster_setup.body)
    template = body["nodes"][0]
    body["nodes"] = [dict(template, id=i, location=1000 + i) for i in range(1, keys.MAX_MEMBERS + 2)]
    with pytest.raises(RosterError, match=f"at most {keys.MAX_MEMBERS}"):
        sign_roster(body, roster_setup.organizer)
    with pytest.raises(RosterError, match="at most"):
        Roster.parse(force_sign(body, roster_setup.organizer), roster_setup.organizer.public)
    body["nodes"] = body["nodes"][:keys.MAX_MEMBERS]
    roster = Roster.parse(sign_roster(body, roster_setup.organizer), roster_setup.organizer.public)
    members = sorted(roster.members)
    full = wire.ReceiptFrame(1, 1, 1, 1, wire.State.REPORTED, 1, bytes((len(members) + 7) // 8),
                             bytes((len(members) + 7) // 8), 1)
    assert len(wire.encode(full, roster_setup.keys[1], roster.block)) <= wire.MAX_FRAME


def test_a_roster_dispatcher_mark_must_be_true_or_false_and_revocation_drops_it(roster_setup):
    body = copy.deepcopy(roster_setup.body)
    body["nodes"][0]["dispatcher"] = True
    body["nodes"][3]["dispatcher"] = True      # node 4 is revoked: no exception for it
    roster = Roster.parse(sign_roster(body, roster_setup.organizer), roster_setup.organizer.public)
    assert roster.dispatchers == frozenset({1})
    body["nodes"][0]["dispatcher"] = "yes"
    with pytest.raises(RosterError, match=r"nodes\[0\]\.dispatcher"):
        sign_roster(body, roster_setup.organizer)
