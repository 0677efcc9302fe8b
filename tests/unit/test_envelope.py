"""Envelope encryption and the master-key keyring (no services)."""

from __future__ import annotations

import base64
import os

import pytest

from relay_server.crypto.envelope import DecryptionError, RecordRef, Sealed, open_sealed, rewrap, seal
from relay_server.crypto.keyring import Keyring, KeyringError, MasterKey, fingerprint, parse_master_key
from relay_server.crypto.opened import OpenedSecrets
from relay_server.domain.provider import Credential

SECRET = "sk-proj-very-secret-provider-key-9f3a"
REF = RecordRef("pcred_1", None, "openai")


def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def keyring(current: str | None = None, old: str = "") -> Keyring:
    ring = Keyring.parse(current or b64key(), old)
    assert ring is not None
    return ring


# --- keyring ---------------------------------------------------------------------------


def test_a_plain_key_gets_a_stable_fingerprint_id_and_an_explicit_id_is_kept() -> None:
    raw = b64key()
    assert parse_master_key(raw).id == parse_master_key(raw).id == fingerprint(base64.b64decode(raw))
    assert parse_master_key(f"mk-2025:{raw}").id == "mk-2025"
    assert parse_master_key(raw).id != parse_master_key(b64key()).id


@pytest.mark.parametrize(
    "entry, message",
    [
        ("not base64 at all!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "32 bytes"),
        (base64.b64encode(os.urandom(48)).decode(), "32 bytes"),
        ("bad id!:" + base64.b64encode(os.urandom(32)).decode(), "invalid key id"),
    ],
)
def test_malformed_master_keys_are_refused_without_echoing_them(entry: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as info:
        parse_master_key(entry)
    assert entry not in str(info.value)


def test_no_master_key_means_no_keyring_but_old_keys_alone_are_an_error() -> None:
    assert Keyring.parse("", "") is None
    with pytest.raises(KeyringError, match="RELAY_MASTER_KEY is not"):
        Keyring.parse("", b64key())


def test_two_different_keys_under_one_id_are_refused() -> None:
    with pytest.raises(KeyringError, match="share the id"):
        Keyring.parse(f"k1:{b64key()}", f"k1:{b64key()}")


def test_keyring_lists_retired_keys_and_never_shows_key_material() -> None:
    current, old = b64key(), b64key()
    ring = keyring(f"new:{current}", f"old:{old},  ")
    assert ring.current.id == "new" and ring.retired_ids == {"old"} and ring.ids == {"new", "old"}
    with pytest.raises(KeyringError, match="'gone'"):
        ring.get("gone")
    for text in (repr(ring), repr(ring.current), repr(MasterKey("x", base64.b64decode(current)))):
        assert current not in text and old not in text and "\\x" not in text


# --- sealing ---------------------------------------------------------------------------


def test_seal_then_open_round_trips_and_stores_no_plaintext() -> None:
    ring = keyring()
    sealed = seal(ring, SECRET, REF)
    assert sealed.master_key_id == ring.current.id
    for blob in (sealed.key_encrypted, sealed.dek_wrapped):
        assert SECRET.encode() not in blob and base64.b64encode(SECRET.encode()) not in blob
    assert open_sealed(ring, sealed, REF) == SECRET
    assert SECRET not in repr(sealed)


def test_each_record_gets_its_own_data_key_and_nonce() -> None:
    ring = keyring()
    a, b = seal(ring, SECRET, REF), seal(ring, SECRET, REF)
    assert a.key_encrypted != b.key_encrypted and a.dek_wrapped != b.dek_wrapped and a.key_nonce != b.key_nonce


@pytest.mark.parametrize(
    "other",
    [
        RecordRef("pcred_2", None, "openai"),  # another row
        RecordRef("pcred_1", "ten_evil", "openai"),  # moved to a tenant
        RecordRef("pcred_1", None, "anthropic"),  # another provider
    ],
)
def test_a_ciphertext_does_not_open_on_another_row(other: RecordRef) -> None:
    ring = keyring()
    sealed = seal(ring, SECRET, REF)
    assert open_sealed(ring, sealed, REF) == SECRET  # opened (and cached) for its own row first
    with pytest.raises(DecryptionError):
        open_sealed(ring, sealed, other)


def test_tampering_or_a_wrong_master_key_fails_closed() -> None:
    ring = keyring()
    sealed = seal(ring, SECRET, REF)
    assert open_sealed(ring, sealed, REF) == SECRET  # the intact row is in the cache of opened secrets
    flipped = bytes([sealed.key_encrypted[0] ^ 1]) + sealed.key_encrypted[1:]
    with pytest.raises(DecryptionError):
        open_sealed(ring, Sealed(flipped, sealed.key_nonce, sealed.dek_wrapped, sealed.master_key_id), REF)
    with pytest.raises(DecryptionError):
        open_sealed(ring, Sealed(sealed.key_encrypted, sealed.key_nonce, sealed.dek_wrapped[:-1] + bytes([sealed.dek_wrapped[-1] ^ 1]), sealed.master_key_id), REF)
    with pytest.raises(DecryptionError, match="not in the keyring"):
        open_sealed(keyring(), sealed, REF)
    # The wrap is bound to its master key id: relabelling the row does not help.
    other = keyring(f"other:{b64key()}")
    with pytest.raises(DecryptionError):
        open_sealed(other, Sealed(sealed.key_encrypted, sealed.key_nonce, sealed.dek_wrapped, "other"), REF)


def test_rewrap_moves_a_row_to_the_new_master_key_without_touching_its_ciphertext() -> None:
    old_key, new_key = b64key(), b64key()
    before = keyring(f"old:{old_key}")
    sealed = seal(before, SECRET, REF)
    during = keyring(f"new:{new_key}", f"old:{old_key}")
    wrapped, master_id = rewrap(during, sealed.dek_wrapped, sealed.master_key_id, REF.credential_id)
    assert master_id == "new" and wrapped != sealed.dek_wrapped
    after = keyring(f"new:{new_key}")  # the old key is gone for good
    assert open_sealed(after, Sealed(sealed.key_encrypted, sealed.key_nonce, wrapped, master_id), REF) == SECRET
    with pytest.raises(DecryptionError):
        open_sealed(after, sealed, REF)


def test_a_credential_never_shows_its_key_in_repr() -> None:
    assert SECRET not in repr(Credential("pcred_1", SECRET, "https://example.test/v1"))


# --- the cache of opened secrets --------------------------------------------------------


def test_an_opened_secret_is_served_from_memory_until_its_bytes_change() -> None:
    ring = keyring()
    sealed = seal(ring, SECRET, REF)
    assert open_sealed(ring, sealed, REF) == SECRET
    assert len(ring.opened) == 1
    # The same bytes again (a fresh RecordRef, as the router builds one per call) hit the cache:
    # an entry under a poisoned value proves the second answer came from it.
    ring.opened.put(REF, sealed, "from-the-cache")
    assert open_sealed(ring, sealed, RecordRef("pcred_1", None, "openai")) == "from-the-cache"
    # An updated secret is new ciphertext: opened afresh, never answered from the old entry.
    updated = seal(ring, SECRET + "-next", REF)
    assert open_sealed(ring, updated, REF) == SECRET + "-next"


def test_a_rewrapped_row_is_a_new_entry_and_a_new_keyring_starts_empty() -> None:
    old_key, new_key = b64key(), b64key()
    during = keyring(f"new:{new_key}", f"old:{old_key}")
    sealed = seal(keyring(f"old:{old_key}"), SECRET, REF)
    assert open_sealed(during, sealed, REF) == SECRET
    wrapped, master_id = rewrap(during, sealed.dek_wrapped, sealed.master_key_id, REF.credential_id)
    moved = Sealed(sealed.key_encrypted, sealed.key_nonce, wrapped, master_id)
    assert open_sealed(during, moved, REF) == SECRET
    assert len(during.opened) == 2
    after = keyring(f"new:{new_key}")
    assert len(after.opened) == 0
    with pytest.raises(DecryptionError):  # what ``during`` opened is not ``after``'s to answer
        open_sealed(after, sealed, REF)


def test_failures_are_not_cached_and_the_cache_is_bounded_and_never_shows_a_secret() -> None:
    ring = keyring()
    sealed = seal(ring, SECRET, REF)
    with pytest.raises(DecryptionError) as info:
        open_sealed(ring, sealed, RecordRef("pcred_1", "ten_evil", "openai"))
    assert SECRET not in str(info.value) and len(ring.opened) == 0
    small = OpenedSecrets(max_entries=2)
    refs = [RecordRef(f"pcred_{i}", None, "openai") for i in range(3)]
    sealed_rows = [seal(ring, f"{SECRET}-{i}", ref) for i, ref in enumerate(refs)]
    for i, (ref, row) in enumerate(zip(refs, sealed_rows, strict=True)):
        small.put(ref, row, f"{SECRET}-{i}")
        if i == 1:
            assert small.get(refs[0], sealed_rows[0]) == f"{SECRET}-0"  # used: now the most recent
    assert len(small) == 2
    assert small.get(refs[1], sealed_rows[1]) is None  # the least recently used went first
    assert small.get(refs[0], sealed_rows[0]) == f"{SECRET}-0"
    assert SECRET not in repr(small) and SECRET not in repr(ring)
