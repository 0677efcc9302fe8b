"""Envelope encryption of one secret (a provider API key).

Each record gets its own random 256-bit data key (DEK):

* ``ciphertext = AES-256-GCM(DEK, nonce, secret, aad=record)``
* ``dek_wrapped = nonce' || AES-256-GCM(master, nonce', DEK, aad=master id + record id)``

The additional data binds a ciphertext to its row (id, tenant, provider), so
a ciphertext copied onto another row — another tenant's, say — fails to
decrypt instead of lending that tenant someone else's key.  Rotating the
master key only re-wraps the DEK (``rewrap``); the secret's ciphertext stays.

Plaintext secrets are handed to a ``Credential`` for one call and kept in the
keyring's bounded in-memory cache of opened secrets (crypto/opened.py), so a
credential used again is not decrypted again; nothing here logs or persists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay_server.crypto.keyring import KEY_BYTES, Keyring, KeyringError

NONCE_BYTES = 12


class DecryptionError(Exception):
    """A record could not be decrypted (wrong key, tampered or mismatched row)."""


@dataclass(frozen=True, slots=True)
class RecordRef:
    """What a ciphertext is bound to."""

    credential_id: str
    tenant_id: str | None
    provider_id: str

    def aad(self) -> bytes:
        return f"relay-credential:v1:{self.credential_id}:{self.tenant_id or ''}:{self.provider_id}".encode()


@dataclass(frozen=True, slots=True)
class Sealed:
    key_encrypted: bytes = field(repr=False)
    key_nonce: bytes = field(repr=False)
    dek_wrapped: bytes = field(repr=False)
    master_key_id: str


def _wrap_aad(master_key_id: str, credential_id: str) -> bytes:
    return f"relay-dek:v1:{master_key_id}:{credential_id}".encode()


def _wrap(keyring: Keyring, dek: bytes, credential_id: str) -> tuple[bytes, str]:
    master = keyring.current
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master.key).encrypt(nonce, dek, _wrap_aad(master.id, credential_id)), master.id


def _unwrap(keyring: Keyring, dek_wrapped: bytes, master_key_id: str, credential_id: str) -> bytes:
    try:
        master = keyring.get(master_key_id)
    except KeyringError as exc:
        raise DecryptionError(str(exc)) from None
    nonce, body = dek_wrapped[:NONCE_BYTES], dek_wrapped[NONCE_BYTES:]
    try:
        dek = AESGCM(master.key).decrypt(nonce, body, _wrap_aad(master_key_id, credential_id))
    except (InvalidTag, ValueError):
        raise DecryptionError(f"the data key of credential {credential_id} does not unwrap") from None
    if len(dek) != KEY_BYTES:
        raise DecryptionError(f"the data key of credential {credential_id} has the wrong size")
    return dek


def seal(keyring: Keyring, secret: str, ref: RecordRef) -> Sealed:
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(dek).encrypt(nonce, secret.encode(), ref.aad())
    wrapped, master_id = _wrap(keyring, dek, ref.credential_id)
    return Sealed(ciphertext, nonce, wrapped, master_id)


def open_sealed(keyring: Keyring, sealed: Sealed, ref: RecordRef) -> str:
    """The secret; from the keyring's ``opened`` cache when these very bytes were opened before
    (crypto/opened.py says why that is exact)."""
    secret = keyring.opened.get(ref, sealed)
    if secret is None:
        secret = _open(keyring, sealed, ref)
        keyring.opened.put(ref, sealed, secret)
    return secret


def _open(keyring: Keyring, sealed: Sealed, ref: RecordRef) -> str:
    dek = _unwrap(keyring, sealed.dek_wrapped, sealed.master_key_id, ref.credential_id)
    try:
        return AESGCM(dek).decrypt(sealed.key_nonce, sealed.key_encrypted, ref.aad()).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError):
        raise DecryptionError(f"credential {ref.credential_id} does not decrypt") from None


def rewrap(keyring: Keyring, dek_wrapped: bytes, master_key_id: str, credential_id: str) -> tuple[bytes, str]:
    """The DEK re-wrapped under the current master key: ``(dek_wrapped, master_key_id)``."""
    dek = _unwrap(keyring, dek_wrapped, master_key_id, credential_id)
    return _wrap(keyring, dek, credential_id)
