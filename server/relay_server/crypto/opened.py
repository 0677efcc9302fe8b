"""Decrypted provider secrets kept in worker memory, so a request does not pay two AES-GCM
decryptions (unwrap the data key, then the secret) for a credential it used a moment ago.

An entry is keyed by everything its plaintext is a function of: the record it belongs to
(credential id, tenant, provider: what the ciphertext is bound to) and the sealed bytes
themselves (ciphertext, nonce, wrapped data key, master key id).  A rotated or updated secret
is new ciphertext, a re-wrapped data key is new bytes under another master key id: either is a
different key here, so a change is never answered from an old entry, and one tenant's record
can never match another's.  The cache belongs to one ``Keyring`` (the master keys it was opened
with) and lives as long as it does; only successful opens are kept.

Plaintext stays in process memory only: never logged, persisted, or put in a repr or an
exception message.  Bounded: the least recently used entry goes first.  Used from the
event loop; a call from another thread at the same time can at worst evict the wrong entry
(each dict operation is atomic), never fail or answer another record's secret.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

MAX_OPENED = 4096


class OpenedSecrets:
    """Keyed by an envelope ``RecordRef`` and its ``Sealed`` (both frozen, hashable: every field
    takes part in the key)."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int = MAX_OPENED) -> None:
        self._entries: OrderedDict[tuple[Hashable, Hashable], str] = OrderedDict()
        self._max = max_entries

    def get(self, ref: Hashable, sealed: Hashable) -> str | None:
        key = (ref, sealed)
        secret = self._entries.get(key)
        if secret is not None:
            try:
                self._entries.move_to_end(key)
            except KeyError:  # evicted meanwhile by another thread: the answer stands
                pass
        return secret

    def put(self, ref: Hashable, sealed: Hashable, secret: str) -> None:
        key = (ref, sealed)
        self._entries[key] = secret
        try:
            self._entries.move_to_end(key)
        except KeyError:
            pass
        while len(self._entries) > self._max:
            try:
                self._entries.popitem(last=False)
            except KeyError:  # emptied meanwhile by another thread
                break

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"OpenedSecrets({len(self._entries)} of {self._max})"
