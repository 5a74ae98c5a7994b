"""The age format as the node writes it (``node.evidence.age``), opened by pyrage and by the stock ``age`` tool."""

import os
import shutil
import subprocess

import pyrage
import pytest

from node.evidence import age

CHUNK = age.CHUNK


@pytest.fixture(scope="module")
def identities():
    return [pyrage.x25519.Identity.generate() for _ in range(2)]


def sealed(recipients, pieces) -> bytes:
    encryptor = age.Encryptor(recipients)
    # each view is good until the next call: copied out as it comes, as a writer would write it
    return encryptor.header + b"".join(bytes(c) for p in pieces for c in encryptor.update(p)) + bytes(encryptor.finish())


# empty, one byte, around one and two chunks (a last chunk that is full must still be flagged last), a MiB and more
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 1 << 20, 3 * (1 << 20) + 5]


@pytest.mark.parametrize("size", SIZES)
def test_what_it_writes_opens_with_pyrage_whatever_the_pieces_it_came_in(identities, size):
    data = os.urandom(size)
    for pieces in ([data], [data[:100], data[100:]], [data[i:i + 7000] for i in range(0, size, 7000)]):
        out = sealed([identities[0].to_public(), str(identities[1].to_public())], pieces)
        assert pyrage.decrypt(out, [identities[0]]) == data
        assert pyrage.decrypt(out, [identities[1]]) == data
        # 16-byte tag a chunk, the last one flagged (so an empty plaintext still has one chunk)
        chunks = max(1, -(-size // CHUNK))
        payload = out.index(b"\n", out.index(b"\n--- ") + 1) + 1 + age.NONCE
        assert len(out) == payload + size + 16 * chunks


@pytest.mark.skipif(shutil.which("age") is None, reason="the stock age tool is not installed (apt: age)")
@pytest.mark.parametrize("size", [0, CHUNK, CHUNK + 1, 1 << 20])
def test_the_stock_age_tool_opens_it(identities, size, tmp_path):
    data = os.urandom(size)
    (tmp_path / "key").write_text(str(identities[1]) + "\n")
    (tmp_path / "item.age").write_bytes(sealed([identities[0].to_public(), identities[1].to_public()], [data]))
    out = subprocess.run(["age", "-d", "-i", str(tmp_path / "key"), str(tmp_path / "item.age")], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data


def test_it_is_age_v1_with_one_x25519_stanza_a_recipient_and_a_fresh_key_each_time(identities):
    one, two = (sealed([identities[0].to_public()], [b"same words"]) for _ in range(2))
    lines = one.split(b"\n")
    assert lines[0] == b"age-encryption.org/v1"
    assert lines[1].startswith(b"-> X25519 ") and len(lines[1].split()[2]) == 43   # a 32-byte share, base64
    assert len(lines[2]) == 43                                                     # the wrapped 16-byte key + tag
    assert lines[3].startswith(b"--- ") and len(lines[3]) == 4 + 43               # the header's MAC
    assert one != two and one.split(b"\n")[1] != two.split(b"\n")[1]               # a new ephemeral key, file key, nonce


def test_any_change_to_what_it_wrote_is_caught_when_opened(identities):
    out = bytearray(sealed([identities[0].to_public()], [os.urandom(3 * CHUNK)]))
    for at in (30, len(out) // 2, len(out) - 1):            # the header, a middle chunk, the last chunk's tag
        bad = bytearray(out)
        bad[at] ^= 1
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(bytes(bad), [identities[0]])
    with pytest.raises(pyrage.DecryptError):                   # a last chunk cut off: truncation shows
        pyrage.decrypt(bytes(out[:-(CHUNK + 16)]), [identities[0]])


@pytest.mark.parametrize("bad", ["age1", "age1qqqqqqqqqqqqqqqqqqqqqqqq", "AGE1Mixed", "bob1qpzry9x8gf2tvdw0s3jn54khce6mua7l",
                                 "not a key"])
def test_a_string_that_is_no_age_recipient_is_refused(bad):
    with pytest.raises(ValueError):
        age.recipient_key(bad)


def test_a_recipient_s_key_comes_out_of_its_bech32_text(identities):
    # what the X25519 key decodes to must be the key pyrage encrypts to: a file for it opens
    text = str(identities[0].to_public())
    assert len(age.recipient_key(text)) == 32 == len(age.recipient_key(text.upper()))
    flipped = text[:-1] + ("q" if text[-1] != "q" else "p")
    with pytest.raises(ValueError, match="checksum"):
        age.recipient_key(flipped)


def test_without_encrypt_into_it_writes_the_same_format(identities, monkeypatch):
    """cryptography before ``encrypt_into`` (the project asks for >= 42): each chunk copied in instead."""
    monkeypatch.setattr(age, "_ENCRYPT_INTO", False)
    data = os.urandom(2 * CHUNK + 3)
    assert pyrage.decrypt(sealed([identities[0].to_public()], [data[:5], data[5:]]), [identities[0]]) == data


def test_nothing_more_goes_in_once_it_is_finished(identities):
    encryptor = age.Encryptor([identities[0].to_public()])
    encryptor.finish()
    with pytest.raises(ValueError):
        list(encryptor.update(b"late"))
    with pytest.raises(ValueError):
        encryptor.finish()
