"""AIP-158 pagination over an ordered list: opaque page tokens, bounded pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TypeVar

from relay_server.errors import ErrorKind, RelayError

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise RelayError(ErrorKind.BAD_REQUEST, "The page_token is malformed.", param="page_token") from None


def page_size(requested: int) -> int:
    if requested < 0:
        raise RelayError(ErrorKind.BAD_REQUEST, "page_size must not be negative.", param="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page(items: Sequence[T], requested_size: int, token: str, *, key: Callable[[T], str]) -> tuple[list[T], str]:
    """Items after the token's key (items sorted by ``key``), and the next token ("" at the end)."""
    size = page_size(requested_size)
    after = decode_token(token) if token else None
    ordered = sorted(items, key=key)
    if after is not None:
        ordered = [item for item in ordered if key(item) > after]
    chunk = ordered[:size]
    next_token = encode_token(key(chunk[-1])) if len(ordered) > size else ""
    return chunk, next_token
