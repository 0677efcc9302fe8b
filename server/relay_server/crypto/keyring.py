"""The master keys that wrap credential data keys.

``RELAY_MASTER_KEY`` is the current key: new credentials and rotations wrap
their data key with it.  ``RELAY_OLD_MASTER_KEYS`` (comma-separated) are
retired keys kept only to unwrap rows not yet re-wrapped by the rotation job.
Each entry is ``base64(32 bytes)`` or ``id:base64(32 bytes)``.  Without an
explicit id the key's id is a fingerprint of the key (an HMAC, so the id says
nothing about the key), stable across processes and restarts: every row
records the id of the key that wrapped it (``master_key_id``).

Keys never appear in reprs or errors; an error names the entry's position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from relay_server.crypto.opened import OpenedSecrets

KEY_BYTES = 32
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyringError(ValueError):
    """A master key entry is malformed, or a needed key is missing."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: str
    key: bytes = field(repr=False)


def fingerprint(key: bytes) -> str:
    return "mk_" + hmac.new(key, b"relay master key id v1", hashlib.sha256).hexdigest()[:16]


def parse_master_key(entry: str, *, what: str = "RELAY_MASTER_KEY") -> MasterKey:
    entry = entry.strip()
    key_id, sep, encoded = entry.rpartition(":")
    if not sep:
        key_id, encoded = "", entry
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{what} must decode to {KEY_BYTES} bytes (got {len(key)})")
    if key_id and not _ID_PATTERN.match(key_id):
        raise KeyringError(f"{what} has an invalid key id (letters, digits, '_', '.', '-'; at most 64)")
    return MasterKey(key_id or fingerprint(key), key)


class Keyring:
    """The current master key plus retired ones, by id."""

    def __init__(self, current: MasterKey, old: Iterable[MasterKey] = ()) -> None:
        keys: dict[str, MasterKey] = {}
        for key in (current, *old):
            existing = keys.get(key.id)
            if existing is not None and not hmac.compare_digest(existing.key, key.key):
                raise KeyringError(f"two different master keys share the id {key.id!r}")
            keys[key.id] = key
        self.current = current
        self._keys: Mapping[str, MasterKey] = keys
        # Secrets opened with these keys (envelope.open_sealed): valid exactly as long as the keys.
        self.opened = OpenedSecrets()

    @classmethod
    def parse(cls, current: str, old: str = "") -> Keyring | None:
        """From the settings' strings; None when no master key is configured."""
        if not current.strip():
            if old.strip():
                raise KeyringError("RELAY_OLD_MASTER_KEYS is set but RELAY_MASTER_KEY is not")
            return None
        olds = [
            parse_master_key(part, what=f"RELAY_OLD_MASTER_KEYS entry {i + 1}")
            for i, part in enumerate(p for p in old.split(",") if p.strip())
        ]
        return cls(parse_master_key(current), olds)

    def get(self, key_id: str) -> MasterKey:
        key = self._keys.get(key_id)
        if key is None:
            raise KeyringError(f"master key {key_id!r} is not in the keyring")
        return key

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    @property
    def retired_ids(self) -> frozenset[str]:
        return frozenset(k for k in self._keys if k != self.current.id)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current.id!r}, retired={sorted(self.retired_ids)!r})"
