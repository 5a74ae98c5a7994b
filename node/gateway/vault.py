"""The key that keeps phone numbers unreadable at rest, derived from the operators' passphrase.

scrypt (n=2**15, r=8, p=1: about 32 MiB and a fraction of a second on a Pi) turns the
passphrase and a random salt (kept in ``sms_state``) into 64 bytes: 32 for AES-256-GCM,
which encrypts each number, and 32 for HMAC-SHA256, which finds a sender among the
subscribers (``number_mac``) and checks PINs (``pin_mac``) without decrypting anything.
A check value in ``sms_state`` tells a wrong passphrase from a right one. The key lives in
the gateway's memory only; a seized node without the passphrase yields no number.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.errors import SilbatoError

SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
_CHECK = b"silbato-sms-passphrase-check"


class VaultError(SilbatoError):
    """A wrong passphrase, or a number that does not decrypt."""


class Vault:
    """The unlocked key: encrypts and decrypts numbers, and makes their lookup codes."""

    def __init__(self, passphrase: str, salt: bytes, *, scrypt: dict | None = None):
        if not passphrase:
            raise VaultError("the passphrase is empty")
        params = scrypt or SCRYPT
        material = hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=params["n"], r=params["r"],
                                  p=params["p"], maxmem=256 * 1024 * 1024, dklen=64)
        self._aead = AESGCM(material[:32])
        self._mac_key = material[32:]

    def mac(self, value: str) -> str:
        return hmac.new(self._mac_key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    @property
    def check(self) -> str:
        """What ``sms_state`` keeps to recognise this passphrase."""
        return self.mac(_CHECK.decode())

    def seal(self, number: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, number.encode("utf-8"), b"silbato-sms-number")

    def open(self, sealed: bytes) -> str:
        try:
            return self._aead.decrypt(bytes(sealed[:12]), bytes(sealed[12:]), b"silbato-sms-number").decode("utf-8")
        except Exception as exc:
            raise VaultError("a number does not decrypt with this key") from exc

    def pseudonym(self, number: str) -> str:
        """What logs say instead of a number: stable for one key, useless without it."""
        return "sms-" + self.mac("log:" + number)[:8]


def new_salt() -> bytes:
    return os.urandom(16)
