"""The age v1 file format's encryption to X25519 recipients, as a stream, on ``cryptography``.

Spec: https://age-encryption.org/v1 (C2SP). Only what sealing needs: X25519 recipients
(``age1...``), encryption, no armor. Opening stays with pyrage (``unseal``) and with the
stock ``age`` tool on an organizer's laptop; the tests open what this writes with both.

Why not pyrage here, which the node used before: pyrage encrypts with Rust's pure ChaCha20
and holds Python's GIL throughout, so the page's other threads (the upload's own reads
among them) wait on it; ``cryptography``'s ChaCha20-Poly1305 (OpenSSL's, with its vector
code) is about three times faster here and lets go of the GIL while it works. The page's
large uploads are CPU-bound on exactly that (benchmark P11, docs/performance.md). The
primitives are all ``cryptography``'s; what is here is the format around them:

* a random 16-byte file key; for each recipient a fresh ephemeral X25519 key, the shared
  secret, ``HKDF-SHA256(secret, salt=ephemeral share || recipient, "age-encryption.org/v1/X25519")``
  as the key that wraps the file key (ChaCha20-Poly1305, zero nonce), in a stanza
  ``-> X25519 <share>`` with the wrapped key on the next line (base64 without padding);
* the header's MAC: HMAC-SHA256 under ``HKDF-SHA256(file key, salt="", "header")`` over the
  header up to and including ``---``;
* the payload: a random 16-byte nonce, then the plaintext in 64 KiB chunks, each sealed with
  ChaCha20-Poly1305 under ``HKDF-SHA256(file key, salt=nonce, "payload")``, nonce an 11-byte
  big-endian counter and a last-chunk flag byte. The last chunk is flagged, and is empty
  only when the whole plaintext is.
"""

from __future__ import annotations

import base64
import secrets
from typing import Iterator

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION_LINE = b"age-encryption.org/v1"
X25519_INFO = b"age-encryption.org/v1/X25519"
CHUNK = 64 * 1024      # plaintext bytes per payload chunk
TAG = 16               # Poly1305 tag per chunk
NONCE = 16             # bytes of the payload's nonce, after the header
COLUMNS = 64           # a stanza body's base64 line length
BATCH = 4              # sealed chunks per write: a 256 KiB buffer (a whole 1 MiB piece at once cost the page 2 MB more)
_LAST = b"\x01"
_MORE = b"\x00"

# Sealing straight into a buffer of our own (newer cryptography); else each chunk is copied in.
_ENCRYPT_INTO = hasattr(ChaCha20Poly1305, "encrypt_into")

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_BECH32_GEN):
            if top >> i & 1:
                check ^= gen
    return check


def recipient_key(recipient) -> bytes:
    """The 32-byte X25519 public key of an age recipient (``age1...``, or a pyrage recipient).

    Bech32 (BIP 173), human-readable part ``age``, checksum verified; ``ValueError`` if it is not one.
    """
    text = str(recipient).strip()
    lowered = text.lower()
    if text != lowered and text != text.upper():
        raise ValueError("not an age recipient: mixed case")
    hrp, sep, data = lowered.rpartition("1")
    if hrp != "age" or not sep or len(data) < 6 or any(c not in _BECH32 for c in data):
        raise ValueError("not an age recipient (age1...)")
    values = [_BECH32.index(c) for c in data]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + values) != 1:
        raise ValueError("not an age recipient: bad checksum")
    acc, bits, out = 0, 0, bytearray()
    for value in values[:-6]:   # 5-bit groups to bytes
        acc, bits = acc << 5 | value, bits + 5
        if bits >= 8:
            bits -= 8
            out.append(acc >> bits & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise ValueError("not an age recipient: bad padding")
    if len(out) != 32:
        raise ValueError("not an age recipient: not a 32-byte key")
    return bytes(out)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _stanza(file_key: bytes, recipient: bytes) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))  # ValueError if all zero
    wrap_key = _hkdf(secret, share + recipient, X25519_INFO)
    body = _b64(ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None))
    lines = [body[i:i + COLUMNS] for i in range(0, len(body), COLUMNS)]
    if len(body) % COLUMNS == 0:
        lines.append(b"")   # the last line is always shorter than a full one
    return b"-> X25519 " + _b64(share) + b"\n" + b"\n".join(lines) + b"\n"


class Encryptor:
    """One age file being written: ``header`` first, then what ``update`` yields for each piece of
    plaintext, then what ``finish`` returns; written in that order.

    Sealed chunks are encrypted into one buffer of the Encryptor's own, ``BATCH`` at a time, reused:
    what ``update`` yields is a view of it, good until the next one is asked for (write it, then go
    on), so a large piece costs that buffer, not a sealed copy of the piece."""

    def __init__(self, recipients: list):
        keys = [recipient_key(r) for r in recipients]
        if not keys:
            raise ValueError("no recipients")
        file_key = secrets.token_bytes(16)
        head = VERSION_LINE + b"\n" + b"".join(_stanza(file_key, key) for key in keys) + b"---"
        mac = hmac.HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
        mac.update(head)
        nonce = secrets.token_bytes(NONCE)
        self.header = head + b" " + _b64(mac.finalize()) + b"\n" + nonce
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._held = b""   # the last chunk so far (1..CHUNK bytes): it may turn out to be the last
        self._out = memoryview(bytearray(BATCH * (CHUNK + TAG)))
        self._finished = False

    def _seal(self, chunks: list, last: bool) -> memoryview:
        """``chunks`` (at most BATCH) sealed one after another into the buffer, the final one flagged if ``last``."""
        at = 0
        for i, chunk in enumerate(chunks):
            nonce = self._counter.to_bytes(11, "big") + (_LAST if last and i == len(chunks) - 1 else _MORE)
            self._counter += 1
            out = self._out[at:at + len(chunk) + TAG]
            if _ENCRYPT_INTO:
                self._aead.encrypt_into(nonce, chunk, None, out)
            else:   # cryptography before encrypt_into: one copy more
                out[:] = self._aead.encrypt(nonce, chunk, None)
            at += len(out)
        return self._out[:at]

    def update(self, data) -> Iterator[memoryview]:
        """The sealed chunks for ``data``, a batch at a time; the last (partial or full) chunk is
        held until more comes or ``finish``. The chunks are taken (and a finished file refused) at
        the call; they are sealed as the batches are asked for, and every one must be."""
        if self._finished:
            raise ValueError("the age file is finished")
        view = memoryview(data)
        chunks = []
        if self._held and view:
            fill = CHUNK - len(self._held)
            self._held, view = self._held + bytes(view[:fill]), view[fill:]
            if view:
                chunks.append(self._held)
        if view:
            end = (len(view) - 1) // CHUNK * CHUNK   # every full chunk but the last piece, which is held
            chunks += [view[start:start + CHUNK] for start in range(0, end, CHUNK)]
            self._held = bytes(view[end:])
        return (self._seal(chunks[first:first + BATCH], False) for first in range(0, len(chunks), BATCH))

    def finish(self) -> memoryview:
        """The last chunk, flagged last (empty only if no plaintext came at all)."""
        if self._finished:
            raise ValueError("the age file is finished")
        self._finished = True
        last, self._held = self._held, b""
        return self._seal([last], True)
