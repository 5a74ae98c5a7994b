"""An incident's evidence manifest: hash-chained entries and a head, each signed by the node daemon.

Pure: dictionaries and a key in, canonical bytes, hashes and signatures out; the daemon
(``node.daemon.evidence``) makes them and ``silbato verify`` checks them.

- An **entry** names one sealed item: ``item`` id, ``incident``, ``received_at`` (seconds on
  the node's clock), ``size`` and ``sha256`` of the plaintext (computed as it streamed in),
  ``sealed_size`` and ``sealed_sha256`` of the ``.age`` file, ``meta_sha256`` of the sealed
  metadata (content type inside), its ``seq`` (0, 1, ...) and ``prev``: the hash of the entry
  before it (for the first, ``genesis(block, incident)``). Its ``hash`` is the SHA-256 of its
  canonical JSON; its signature is over the same bytes, after ``ENTRY_DOMAIN``.
- A **pulled** entry (``kind: "pulled"``) records that an earlier item left the node: an
  organizer pulled it (``silbato evidence pull``) and the node deleted its files after checking
  them against its entry. It names the ``item`` and ``pulled_at``; it is chained and signed
  like an item's, so a later bundle shows that item as pulled, not removed. Item entries have
  no ``kind`` (the first version's entries are items).
- The **head** says what the incident held when it was last signed: the SHA-256 of each of
  its transition frames in the order taken, how many entries the chain has and its ``tip``.
  It is what makes a truncated chain, or a removed or reordered frame, visible.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

ENTRY_DOMAIN = b"silbato-evidence-entry\x00"
HEAD_DOMAIN = b"silbato-evidence-head\x00"
VERSION = 1


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def genesis(block: str, incident: str) -> str:
    """The ``prev`` of an incident's first entry: binds the chain to its block and incident."""
    return sha256(b"silbato-evidence-genesis\x00" + block.encode() + b"\x00" + incident.encode())


def entry(*, block: str, incident: str, seq: int, prev: str, signer: int, row: dict) -> dict[str, Any]:
    """The entry for a pending evidence ``row`` (``node.store`` ``evidence``)."""
    return {"v": VERSION, "block": block, "incident": incident, "seq": seq, "prev": prev, "signer": signer,
            "item": row["item_id"], "received_at": row["received_at"], "size": row["size"],
            "sha256": row["sha256"], "sealed_size": row["sealed_size"], "sealed_sha256": row["sealed_sha256"],
            "meta_sha256": row["meta_sha256"]}


def pulled(*, block: str, incident: str, seq: int, prev: str, signer: int, item: str, pulled_at: float
           ) -> dict[str, Any]:
    """The entry recording that ``item`` was pulled off the node at ``pulled_at`` (node clock, seconds)."""
    return {"v": VERSION, "kind": "pulled", "block": block, "incident": incident, "seq": seq, "prev": prev,
            "signer": signer, "item": item, "pulled_at": pulled_at}


def kind(body: dict[str, Any]) -> str:
    """``item`` or ``pulled``."""
    return body.get("kind", "item")


def head(*, block: str, incident: str, frames: list[bytes], entries: int, tip: str, signer: int) -> dict[str, Any]:
    return {"v": VERSION, "block": block, "incident": incident, "signer": signer,
            "frames": [sha256(f) for f in frames], "entries": entries, "tip": tip}


def sign(domain: bytes, body: dict[str, Any], key) -> str:
    """``key`` (``node.protocol.keys.SigningKey``) over ``domain`` + the canonical body, base64."""
    return base64.b64encode(key.sign(domain + canonical(body))).decode()


def signed_by(domain: bytes, body: dict[str, Any], signature: str, member) -> bool:
    """Whether ``signature`` (base64) is ``member``'s (a roster ``Member``) over ``body``."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, TypeError):
        return False
    return len(raw) == 64 and member.verify(raw, domain + canonical(body))
