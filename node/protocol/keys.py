"""Node identity (Ed25519), organizer keys and the signed roster.

Key files hold the raw 32-byte Ed25519 seed, base64-encoded on one line, with
mode 0600. Public keys travel as base64 of their 32 raw bytes.

A roster file is JSON::

    {"roster": {"block": "elm-st", "version": 3,
                "nodes": [{"id": 1, "name": "B1", "location": 101,
                           "place": "Building 1", "public_key": "<base64>",
                           "revoked": false}, ...],
                "settings": {"radio.preset": "MEDIUM_FAST", "supervision.period": 180}},
     "signature": "<base64 Ed25519 signature by the organizer key>"}

The signature covers the canonical JSON of ``roster`` (sorted keys, no spaces), so
the block-wide ``settings`` too. A second one, ``public_signature``, covers the same body
without its place names (``public_body``, under the prefix ``PUBLIC_DOMAIN``): that *public
roster* is what a bridge node shows the neighborhood's broker (node/daemon/neighborhood.py),
since place names are never sent beyond the block. Rosters signed before it have none. They are optional (older rosters carry none); which
settings may appear and their bounds are declared in ``node.config`` (``BLOCK_SETTINGS``,
checked by ``node.config.block_settings`` when a roster is signed, installed or applied):
this module checks only that they are an object of names and plain values.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from node.errors import KeyFileError, RosterError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise RosterError(f"{what}: not base64") from None
    if size is not None and len(raw) != size:
        raise RosterError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` and a newline to ``path`` with mode 0600, synced, replacing it atomically.

    Raises ``KeyFileError``. Used for node and organizer keys and the block's channel key.
    """
    write_secret_bytes(path, (text + "\n").encode())


def write_secret_bytes(path: Path, data: bytes, *, owner: tuple[int, int] | None = None) -> None:
    """``write_secret`` for raw bytes (the page's secret); ``owner`` (uid, gid) is set before it appears."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # a stale .tmp could carry looser permissions
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # whatever the umask
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"{path}: cannot write key: {exc.strerror or exc}") from None


class SigningKey:
    """An Ed25519 private key kept in a 0600 file: a node's identity or the organizers' key."""

    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self.public = private.public_key()
        self.public_raw = public_bytes(self.public)

    @property
    def public_b64(self) -> str:
        return b64(self.public_raw)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def create(cls, path: Path, *, force: bool = False) -> "SigningKey":
        """Write a new key to ``path`` with mode 0600; refuse to overwrite unless ``force``."""
        path = Path(path)
        if path.exists() and not force:
            raise KeyFileError(f"{path}: a key exists already; it was not replaced")
        key = cls.generate()
        write_secret(path, b64(key._private.private_bytes_raw()))
        return key

    @classmethod
    def load(cls, path: Path) -> "SigningKey":
        path = Path(path)
        try:
            mode = path.stat().st_mode & 0o777
            text = path.read_text().strip()
        except FileNotFoundError:
            raise KeyFileError(f"{path}: key file not found (run 'silbato keys init')") from None
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read key: {exc.strerror}") from None
        if mode & 0o077:
            raise KeyFileError(f"{path}: key file mode is {mode:04o}; it must be 0600")
        try:
            seed = base64.b64decode(text, validate=True)
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except ValueError:
            raise KeyFileError(f"{path}: not an Ed25519 key") from None


def load_organizer_key(path: Path) -> SigningKey:
    """The organizers' private key, for signing a roster; raises KeyFileError.

    A public key file (``organizer.key.pub``) holds 32 bytes of base64 too, and would load
    as a private key that signs rosters no node accepts: it is refused by name.
    """
    path = Path(path)
    if path.name.endswith(".pub"):
        stem = path.name.removesuffix(".pub")  # 'silbato roster keygen PATH' made PATH and PATH.pub
        private = stem if stem and path.with_name(stem).is_file() else "organizer.key"
        raise KeyFileError(f"{path}: that is the organizers' public key; sign with the private key ({private})")
    return SigningKey.load(path)


def load_public(path: Path) -> Ed25519PublicKey:
    """Read a base64 public key file (such as the organizers' ``organizer.pub``)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc.strerror}") from None
    try:
        return Ed25519PublicKey.from_public_bytes(unb64(text, str(path), 32))
    except RosterError as exc:
        raise KeyFileError(str(exc)) from None


@dataclass(frozen=True)
class Member:
    """One building's node on the roster."""

    id: int           # 1..65535, the node id on air
    name: str         # short name, such as "B7"
    location: int     # location code on air, 1..65535
    place: str        # human-readable place name; never sent on air
    public_key: Ed25519PublicKey
    revoked: bool = False
    dispatcher: bool = False   # the block's SMS gateway node: it may confirm its own (texted) report

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public_key.verify(signature, data)
            return True
        except InvalidSignature:
            return False


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Signed before the canonical public roster, so a public signature is never a roster signature.
PUBLIC_DOMAIN = b"silbato-public-roster/1\0"


# What another block never needs to know: place names, which building is the SMS gateway, the
# block's own settings.
_PRIVATE_NODE_FIELDS = ("place", "dispatcher")


def public_body(body: dict) -> dict:
    """A roster body as it may leave the block: block, version, and each node's id, name,
    location code, key and revocation; no place names, dispatcher mark or settings."""
    nodes = body.get("nodes")
    if not isinstance(nodes, list):
        return body
    return {**{k: v for k, v in body.items() if k != "settings"},
            "nodes": [{k: v for k, v in n.items() if k not in _PRIVATE_NODE_FIELDS} if isinstance(n, dict) else n
                      for n in nodes]}


def _public_message(body: dict) -> bytes:
    return PUBLIC_DOMAIN + _canonical(public_body(body))


def signed_body(document: Any, field: str, organizer: Ed25519PublicKey, *, what: str, prefix: bytes = b"",
                signature_field: str = "signature") -> dict:
    """The body under ``field`` of a signed document, once its signature (over ``prefix`` and the
    body's canonical JSON) checks against ``organizer``; raise ``RosterError`` naming ``what``."""
    if not isinstance(document, dict) or not isinstance(document.get(field), dict):
        raise RosterError(f"{what}: expected an object with '{field}' and '{signature_field}'")
    body = document[field]
    signature = unb64(str(document.get(signature_field, "")), f"{what} {signature_field}", 64)
    try:
        organizer.verify(signature, prefix + _canonical(body))
    except InvalidSignature:
        raise RosterError(f"{what}: bad signature (not signed by the organizers' key, or altered)") from None
    return body


class Roster:
    """The verified list of the block's nodes. Build it with :meth:`parse` or :meth:`load`."""

    def __init__(self, block: str, version: int, members: Iterable[Member], document: dict,
                 settings: dict[str, Any] | None = None):
        self.block = block
        self.version = version
        self.settings = dict(settings or {})  # block-wide settings, as signed (node.config.with_roster applies them)
        self.members = {m.id: m for m in members}
        self.by_location = {m.location: m for m in self.members.values()}
        # Nodes the organizers trust to confirm a report they signed themselves: the SMS gateway,
        # which signs every responder's texted REPORT and CONFIRM (two people, one node).
        self.dispatchers = frozenset(m.id for m in self.members.values() if m.dispatcher and not m.revoked)
        self.document = document  # the signed JSON document, for re-installing elsewhere

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.members

    def member(self, node_id: int) -> Member | None:
        return self.members.get(node_id)

    def find_key(self, public_raw: bytes) -> Member | None:
        for m in self.members.values():
            if public_bytes(m.public_key) == public_raw:
                return m
        return None

    def place(self, location: int) -> str:
        m = self.by_location.get(location)
        return m.place if m else f"location {location}"

    @classmethod
    def parse(cls, document: Any, organizer: Ed25519PublicKey) -> "Roster":
        """Check the signature and shape of a roster document; raise ``RosterError``."""
        body = signed_body(document, "roster", organizer, what="roster")
        if "public_signature" in document:
            public = unb64(str(document["public_signature"]), "roster public_signature", 64)
            try:
                organizer.verify(public, _public_message(body))
            except InvalidSignature:
                raise RosterError("roster: bad public_signature (not the organizers', or altered)") from None
        block, version, members, settings = _parse_body(body)
        return cls(block, version, members, document=document, settings=settings)

    @classmethod
    def parse_public(cls, document: Any, organizer: Ed25519PublicKey) -> "Roster":
        """Check a public roster (``public_document``: no place names); raise ``RosterError``.

        Its members' ``place`` is empty: another block knows a building by its location code only."""
        body = signed_body(document, "roster", organizer, what="public roster", prefix=PUBLIC_DOMAIN,
                           signature_field="public_signature")
        if any(isinstance(n, dict) and any(f in n for f in _PRIVATE_NODE_FIELDS) for n in body.get("nodes") or []) \
                or "settings" in body:
            raise RosterError("public roster: carries what stays in the block (places, dispatcher, settings)")
        block, version, members, settings = _parse_body(body, public=True)
        return cls(block, version, members, document=document, settings=settings)

    def public_document(self) -> dict | None:
        """The roster as another block may see it (no place names), or None if signed without one."""
        signature = self.document.get("public_signature")
        if signature is None:
            return None
        return {"roster": public_body(self.document["roster"]), "public_signature": signature}

    @classmethod
    def load(cls, path: Path, organizer: Ed25519PublicKey) -> "Roster":
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RosterError(f"{path}: no roster installed (run 'silbato roster install')") from None
        except (OSError, ValueError) as exc:
            raise RosterError(f"{path}: cannot read roster: {exc}") from None
        return cls.parse(document, organizer)


# Nodes on one roster, revoked ones included: each receipt carries a bit per roster node, and
# must fit one frame (``node.protocol.wire.MAX_BITMAP``). A block is 10-30 buildings.
MAX_MEMBERS = 136


def _parse_body(body: dict, public: bool = False) -> tuple[str, int, list[Member], dict[str, Any]]:
    block, version, nodes = body.get("block"), body.get("version"), body.get("nodes")
    settings = body.get("settings", {})
    if not isinstance(settings, dict) or not all(
            isinstance(v, (str, int, float, bool)) for v in settings.values()):
        raise RosterError('roster: \'settings\' must be an object of block-wide settings, '
                          'such as {"supervision.period": 180}')
    if not isinstance(block, str) or not block:
        raise RosterError("roster: 'block' must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RosterError("roster: 'version' must be a positive integer")
    if not isinstance(nodes, list) or not nodes:
        raise RosterError("roster: 'nodes' must be a non-empty list")
    if len(nodes) > MAX_MEMBERS:
        raise RosterError(f"roster: {len(nodes)} nodes; a block has at most {MAX_MEMBERS} "
                          "(a receipt's bitmaps must fit one frame): split it into two blocks")
    members, seen_ids, seen_locations = [], set(), set()
    for i, entry in enumerate(nodes):
        where = f"roster: nodes[{i}]"
        if not isinstance(entry, dict):
            raise RosterError(f"{where}: expected an object")
        for field, kind in (("id", int), ("name", str), ("location", int), ("place", str), ("public_key", str)):
            if public and field == "place":
                continue
            if not isinstance(entry.get(field), kind) or isinstance(entry.get(field), bool):
                raise RosterError(f"{where}.{field}: expected {'an integer' if kind is int else 'a string'}")
        if not (0 < entry["id"] < 2**16 and 0 < entry["location"] < 2**16):
            raise RosterError(f"{where}: id and location must be 1..65535")
        if entry["id"] in seen_ids or entry["location"] in seen_locations:
            raise RosterError(f"{where}: duplicate id or location")
        seen_ids.add(entry["id"])
        seen_locations.add(entry["location"])
        key = Ed25519PublicKey.from_public_bytes(unb64(entry["public_key"], f"{where}.public_key", 32))
        if not isinstance(entry.get("dispatcher", False), bool):
            raise RosterError(f"{where}.dispatcher: expected true or false")
        members.append(Member(entry["id"], entry["name"], entry["location"], entry.get("place", ""), key,
                              bool(entry.get("revoked", False)), entry.get("dispatcher", False)))
    return block, version, members, settings


def sign_roster(body: dict, organizer: SigningKey) -> dict:
    """Sign a roster body (``{"block", "version", "nodes"}``, optionally ``"settings"``) after checking its shape.

    The values of ``settings`` are checked by the caller (``node.config.block_settings``): the
    protocol does not know the settings' bounds."""
    _parse_body(body)
    return {"roster": body, "signature": b64(organizer.sign(_canonical(body))),
            "public_signature": b64(organizer.sign(_public_message(body)))}


def install_roster(document: Any, organizer: Ed25519PublicKey, path: Path, *,
                   node_key: bytes | None = None, check: Callable[[Roster], Any] | None = None) -> Roster:
    """Verify ``document`` and write it to ``path``, refusing a lower version than the installed one,
    or the installed version with other contents (nodes compare roster versions in their heartbeats,
    so a change, such as a block-wide setting, needs a new version).

    With ``node_key`` (this node's raw public key), also refuse a roster on which this node
    is missing or revoked: the daemon could not start with it. ``check`` (the block-wide
    settings' values, ``node.config.with_roster``) raises ``RosterError`` to refuse it too.
    """
    roster = Roster.parse(document, organizer)
    if check is not None:
        check(roster)
    if node_key is not None:
        me, shown = roster.find_key(node_key), b64(node_key)
        if me is None:
            raise RosterError(f"roster: this roster does not list this node's key ({shown}): "
                              "ask the organizers to add it")
        if me.revoked:
            raise RosterError(f"roster: this roster lists this node's key ({shown}) as {me.name}, revoked: "
                              "the node could not start with it; ask the organizers")
    path = Path(path)
    if path.exists():
        try:
            current = Roster.load(path, organizer)
        except RosterError:
            current = None  # a damaged installed roster must not block a good one
        if current is not None:
            if roster.block != current.block:
                raise RosterError(f"roster: block {roster.block!r} is not this node's block {current.block!r}")
            if roster.version < current.version:
                raise RosterError(f"roster: version {roster.version} is older than installed version {current.version}")
            if roster.version == current.version and \
                    _canonical(document["roster"]) != _canonical(current.document["roster"]):
                raise RosterError(f"roster: version {roster.version} is installed already with other contents: "
                                  "the organizers must raise 'version' when they change the roster")
    write_document(path, document, "roster")
    return roster


def write_document(path: Path, document: dict, what: str) -> None:
    """Replace ``path`` with ``document`` (JSON), atomically; raise ``RosterError`` naming ``what``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise RosterError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None


# -- this node's identity, from its settings ------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """This node's signing key, the installed roster, and this node's entry on it."""

    key: SigningKey
    roster: Roster
    me: Member


def load_roster(cfg) -> Roster:
    """The installed roster (``cfg.roster_file``), verified against ``node.organizer_key``; raises RosterError."""
    return Roster.load(cfg.roster_file, load_public(Path(cfg["node.organizer_key"])))


def load_identity(cfg, *, revoked_ok: bool = False) -> Identity:
    """This node's key and roster entry (``cfg`` is a ``node.config.Config``).

    Raises KeyFileError or RosterError, naming the file, when the key is missing or
    not on the installed roster, or revoked there (unless ``revoked_ok``: a revoked
    node keeps its name and place, for a host name or a spoken test, never to sign).
    """
    key = SigningKey.load(cfg.key_file)
    roster = load_roster(cfg)
    me = roster.find_key(key.public_raw)
    if me is None or (me.revoked and not revoked_ok):
        raise RosterError(f"{cfg.key_file}: this node's key is {'revoked' if me else 'not'} on "
                          f"roster v{roster.version}; ask the organizers for a roster with it")
    return Identity(key, roster, me)
