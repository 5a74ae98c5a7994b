"""The neighborhood roster: the member blocks, signed by the neighborhood's organizers (Ed25519).

It is to the neighborhood what the block's roster (``node.protocol.keys``) is to a block. A
neighborhood roster file is JSON::

    {"neighborhood": {"name": "eastside", "version": 2,
                      "blocks": [{"name": "elm-st", "organizer_key": "<base64>",
                                  "area": "Elm St 100-200", "neighbors": ["oak-st"],
                                  "revoked": false}, ...],
                      "policy": {"states": ["confirmed", "all_clear", "cancelled"], "to": "neighbors"}},
     "signature": "<base64 Ed25519 signature by the neighborhood organizers' key>"}

The signature covers ``DOMAIN`` and the canonical JSON of ``neighborhood`` (sorted keys, no
spaces). A block's ``name`` is its roster's ``block`` and a level of its MQTT topics; its
``organizer_key`` is the public key that signs that block's roster, so a foreign block's
roster verifies against this roster, and that block's frames against its roster. Neighbors
are symmetric: a block listed by either side is a neighbor of the other. ``policy`` is
optional: which alert states cross to other blocks and to which (``neighbors`` or ``all``);
without it, each node's ``neighborhood.cross`` and ``neighborhood.cross_to`` settings apply.

On air, a block travels as its **code**: the first 4 bytes of SHA-256 of its name (``code``),
the same whatever the roster's version; two blocks of one roster never share a code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.errors import ConfigError, RosterError
from node.protocol.alerts import State
from node.protocol import keys
from node.protocol.keys import SigningKey, _canonical, b64, public_bytes, signed_body, unb64

DOMAIN = b"silbato-neighborhood/1\0"
MAX_BLOCKS = 1000
MAX_NAME = 48      # characters of a neighborhood or block name (a topic level)
MAX_AREA = 80      # characters of a block's public description
# The states that may cross, by name; REPORTED only if the organizers widen the policy.
STATE_WORDS = {"reported": State.REPORTED, "confirmed": State.CONFIRMED, "all_clear": State.ALL_CLEAR,
               "cancelled": State.CANCELLED}
DEFAULT_STATES = (State.CONFIRMED, State.ALL_CLEAR, State.CANCELLED)
TO_CHOICES = ("neighbors", "all")
# Seconds a nearby alert shows without its ALL CLEAR or CANCELLED (and a NEARBY frame is news).
NEARBY_FOR = 2 * 3600.0


def code(name: str) -> int:
    """A block's code on air: 4 bytes of SHA-256 of its name, as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big")


def check_name(name: Any, what: str) -> str:
    """A neighborhood or block name: a usable MQTT topic level. Raises RosterError naming ``what``."""
    if not isinstance(name, str) or not name:
        raise RosterError(f"{what}: expected a non-empty string")
    if len(name) > MAX_NAME or any(c in name for c in "/+#\0") or name != name.strip() or \
            not name.isprintable():
        raise RosterError(f"{what}: {name!r} must be at most {MAX_NAME} printable characters "
                          "without '/', '+', '#' or surrounding spaces (it is a level of the MQTT topics)")
    return name


@dataclass(frozen=True)
class Policy:
    """Which alert states cross to other blocks (``states``) and to which (``to``: neighbors or all)."""

    states: frozenset[State] = frozenset(DEFAULT_STATES)
    to: str = "neighbors"


def parse_policy(states: Any, to: Any, where: str) -> Policy:
    """``states``: a list of state words (or a comma-separated string); ``to``: neighbors or all.
    Raises RosterError naming ``where``."""
    if isinstance(states, str):
        states = [s.strip() for s in states.split(",") if s.strip()]
    if not isinstance(states, list) or not states:
        raise RosterError(f"{where}.states: expected a list of states ({', '.join(STATE_WORDS)})")
    bad = [s for s in states if s not in STATE_WORDS]
    if bad:
        raise RosterError(f"{where}.states: {bad[0]!r} is not one of {', '.join(STATE_WORDS)}")
    if to not in TO_CHOICES:
        raise RosterError(f"{where}.to: {to!r} is not one of {', '.join(TO_CHOICES)}")
    return Policy(frozenset(STATE_WORDS[s] for s in states), to)


def policy_from_settings(cfg) -> Policy:
    """The policy of ``neighborhood.cross`` and ``neighborhood.cross_to``; raises ConfigError naming the key."""
    try:
        return parse_policy(cfg["neighborhood.cross"], cfg["neighborhood.cross_to"], "neighborhood.cross")
    except RosterError as exc:
        raise ConfigError(f"{exc} (setting neighborhood.cross / neighborhood.cross_to)") from None


@dataclass(frozen=True)
class Block:
    """One member block of the neighborhood."""

    name: str
    organizer_key: Ed25519PublicKey
    area: str                 # a short public description, such as "Elm St 100-200"
    neighbors: frozenset[str]
    revoked: bool = False

    @property
    def code(self) -> int:
        return code(self.name)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            self.organizer_key.verify(signature, data)
            return True
        except InvalidSignature:
            return False


class NeighborhoodRoster:
    """The verified list of a neighborhood's blocks. Build it with :meth:`parse` or :meth:`load`."""

    def __init__(self, name: str, version: int, blocks: Iterable[Block], document: dict,
                 policy: Policy | None = None):
        self.name, self.version, self.document, self.policy = name, version, document, policy
        self.blocks = {b.name: b for b in blocks}
        self.by_code = {b.code: b for b in self.blocks.values()}

    def block(self, name: str) -> Block | None:
        return self.blocks.get(name)

    def neighbors(self, a: str, b: str) -> bool:
        """Whether blocks ``a`` and ``b`` are neighbors (either lists the other)."""
        ba, bb = self.blocks.get(a), self.blocks.get(b)
        return bool(ba and bb and (b in ba.neighbors or a in bb.neighbors))

    def crosses(self, sender: str, receiver: str, fallback: Policy) -> bool:
        """Whether ``sender``'s alerts reach ``receiver`` under this roster's policy (or ``fallback``)."""
        policy = self.policy or fallback
        return policy.to == "all" or self.neighbors(sender, receiver)

    def states(self, fallback: Policy) -> frozenset[State]:
        return (self.policy or fallback).states

    @classmethod
    def parse(cls, document: Any, organizer: Ed25519PublicKey) -> "NeighborhoodRoster":
        """Check the signature and shape of a neighborhood roster document; raise ``RosterError``."""
        body = signed_body(document, "neighborhood", organizer, what="neighborhood roster", prefix=DOMAIN)
        name, version, blocks, policy = _parse_body(body)
        return cls(name, version, blocks, document, policy)

    @classmethod
    def load(cls, path: Path, organizer: Ed25519PublicKey) -> "NeighborhoodRoster":
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RosterError(f"{path}: no neighborhood roster installed "
                              "(run 'silbato neighborhood install')") from None
        except (OSError, ValueError) as exc:
            raise RosterError(f"{path}: cannot read neighborhood roster: {exc}") from None
        return cls.parse(document, organizer)


def _parse_body(body: Any) -> tuple[str, int, list[Block], Policy | None]:
    if not isinstance(body, dict):
        raise RosterError("neighborhood roster: expected an object")
    name = check_name(body.get("name"), "neighborhood roster: 'name'")
    version, entries = body.get("version"), body.get("blocks")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RosterError("neighborhood roster: 'version' must be a positive integer")
    if not isinstance(entries, list):
        raise RosterError("neighborhood roster: 'blocks' must be a list")
    if len(entries) > MAX_BLOCKS:
        raise RosterError(f"neighborhood roster: {len(entries)} blocks; at most {MAX_BLOCKS}")
    blocks, codes = [], {}
    for i, entry in enumerate(entries):
        where = f"neighborhood roster: blocks[{i}]"
        if not isinstance(entry, dict):
            raise RosterError(f"{where}: expected an object")
        bname = check_name(entry.get("name"), f"{where}.name")
        if any(b.name == bname for b in blocks):
            raise RosterError(f"{where}.name: {bname!r} is listed twice")
        if code(bname) in codes:
            raise RosterError(f"{where}.name: {bname!r} has the same code on air as {codes[code(bname)]!r}: "
                              "rename one of them")
        codes[code(bname)] = bname
        area = entry.get("area", "")
        if not isinstance(area, str) or len(area) > MAX_AREA:
            raise RosterError(f"{where}.area: expected a string of at most {MAX_AREA} characters")
        neighbors = entry.get("neighbors", [])
        if not isinstance(neighbors, list) or not all(isinstance(n, str) for n in neighbors):
            raise RosterError(f"{where}.neighbors: expected a list of block names")
        if bname in neighbors:
            raise RosterError(f"{where}.neighbors: a block is not its own neighbor")
        if not isinstance(entry.get("revoked", False), bool):
            raise RosterError(f"{where}.revoked: expected true or false")
        key = Ed25519PublicKey.from_public_bytes(unb64(str(entry.get("organizer_key", "")),
                                                       f"{where}.organizer_key", 32))
        blocks.append(Block(bname, key, area, frozenset(neighbors), entry.get("revoked", False)))
    names = {b.name for b in blocks}
    for i, b in enumerate(blocks):
        unknown = sorted(b.neighbors - names)
        if unknown:
            raise RosterError(f"neighborhood roster: blocks[{i}].neighbors: {unknown[0]!r} is not a block "
                              "of this neighborhood")
    policy = None
    if "policy" in body:
        raw = body["policy"]
        if not isinstance(raw, dict):
            raise RosterError("neighborhood roster: 'policy' must be an object")
        policy = parse_policy(raw.get("states", [s.word for s in DEFAULT_STATES]), raw.get("to", "neighbors"),
                              "neighborhood roster: policy")
    return name, version, blocks, policy


def sign_neighborhood(body: dict, organizer: SigningKey) -> dict:
    """Sign a neighborhood roster body after checking its shape."""
    _parse_body(body)
    return {"neighborhood": body, "signature": b64(organizer.sign(DOMAIN + _canonical(body)))}


def newer_than(roster: NeighborhoodRoster, current: NeighborhoodRoster | None) -> bool:
    """Whether ``roster`` may replace ``current``: same neighborhood, a higher version.
    The same version with other contents raises RosterError (the organizers must raise it)."""
    if current is None:
        return True
    if roster.name != current.name:
        raise RosterError(f"neighborhood roster: neighborhood {roster.name!r} is not {current.name!r}")
    if roster.version == current.version and \
            _canonical(roster.document["neighborhood"]) != _canonical(current.document["neighborhood"]):
        raise RosterError(f"neighborhood roster: version {roster.version} is installed already with other "
                          "contents: the organizers must raise 'version' when they change it")
    return roster.version > current.version


def install_neighborhood(document: Any, organizer: Ed25519PublicKey, path: Path, *,
                         name: str = "") -> NeighborhoodRoster:
    """Verify ``document`` and write it to ``path``; refuse another neighborhood than ``name`` (when
    set) or than the installed one, and an older version. Raises RosterError."""
    roster = NeighborhoodRoster.parse(document, organizer)
    if name and roster.name != name:
        raise RosterError(f"neighborhood roster: it is neighborhood {roster.name!r}; this node's "
                          f"neighborhood.name is {name!r}")
    path = Path(path)
    current = None
    if path.exists():
        try:
            current = NeighborhoodRoster.load(path, organizer)
        except RosterError:
            current = None  # a damaged installed roster must not block a good one
    if current is not None and roster.version < current.version:
        raise RosterError(f"neighborhood roster: version {roster.version} is older than installed "
                          f"version {current.version}")
    newer_than(roster, current)
    write_document(path, document)
    return roster


def write_document(path: Path, document: dict) -> None:
    """Replace ``path`` with ``document`` (JSON), atomically. Raises RosterError."""
    keys.write_document(path, document, "neighborhood roster")


def roster_path(cfg) -> Path:
    """Where this node keeps the neighborhood roster: ``neighborhood.roster`` or <state_dir>/neighborhood.json."""
    return Path(cfg["neighborhood.roster"]) if cfg["neighborhood.roster"] else cfg.state_dir / "neighborhood.json"


def load_installed(cfg) -> NeighborhoodRoster:
    """The installed neighborhood roster, verified against ``neighborhood.organizer_key``; raises
    RosterError or KeyFileError, naming the file."""
    from node.protocol.keys import load_public

    return NeighborhoodRoster.load(roster_path(cfg), load_public(Path(cfg["neighborhood.organizer_key"])))


def block_entry(name: str, organizer_key: Ed25519PublicKey, area: str, neighbors: Iterable[str] = ()) -> dict:
    """A ``blocks`` entry of a neighborhood roster body."""
    return {"name": name, "organizer_key": b64(public_bytes(organizer_key)), "area": area,
            "neighbors": sorted(neighbors), "revoked": False}
