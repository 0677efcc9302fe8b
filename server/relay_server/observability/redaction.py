"""The last line of defence for secrets in logs.

Relay logs key hints, never keys or headers; this catches the mistakes: a
field whose name says it holds a secret is masked, and any Relay API key or
``Bearer`` credential or URL password (``redis+sentinel://user:secret@…``,
``postgresql://…``) that slipped into a message or a value is masked in the
finished line.  Both checks are cheap substring tests before any regex runs.
"""

from __future__ import annotations

import re

MASK = "[redacted]"

_SECRET_FIELDS = frozenset(
    {"authorization", "x-api-key", "x_api_key", "api_key", "apikey", "key", "secret", "token", "password", "admin_token",
     "credential", "cookie"}
)
_KEY = re.compile(r"rly_(live|test)_sk_[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]{8,}")
# scheme://user:secret@host — the secret up to the last "@" before whitespace or a quote.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s\"'/:@]*:)[^\s\"']*@")


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_FIELDS or lowered.endswith(("_secret", "_token", "_password", "_api_key"))


def scrub(text: str) -> str:
    """``text`` with Relay keys and bearer credentials masked."""
    if "_sk_" in text:
        text = _KEY.sub(lambda m: f"rly_{m.group(1)}_sk_{MASK}", text)
    if "earer" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return text
