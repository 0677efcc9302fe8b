"""Opaque pagination cursors for threads and messages.

A cursor is the keyset position of the last row of a page — ``seq`` for
messages, ``(created_at, id)`` for threads — plus what the listing was
filtered and ordered by, base64url-encoded JSON.  A cursor only continues the
listing it came from: a different thread, order or filter, or anything that
does not decode, is a 400, never a silently different page.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson

from relay_server.errors import ErrorKind, RelayError

_VERSION = 1


def _encode(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": _VERSION, **payload})).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise malformed() from None
    if not isinstance(data, dict) or data.get("v") != _VERSION:
        raise malformed()
    return data


def malformed(why: str = "The cursor is malformed.") -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, why, param="cursor", code="invalid_cursor")


def message_cursor(thread_id: str, seq: int, descending: bool, include_tools: bool) -> str:
    return _encode({"k": "m", "t": thread_id, "s": seq, "d": descending, "x": include_tools})


def parse_message_cursor(cursor: str, thread_id: str, descending: bool, include_tools: bool) -> int:
    """The ``seq`` to continue after."""
    data = _decode(cursor)
    seq = data.get("s")
    if data.get("k") != "m" or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise malformed()
    if data.get("t") != thread_id or data.get("d") is not descending or data.get("x") is not include_tools:
        raise malformed("The cursor belongs to another listing (thread, order or filter).")
    return seq


def thread_cursor(created_at: datetime, thread_id: str, end_user_id: str | None) -> str:
    return _encode({"k": "t", "c": created_at.isoformat(), "i": thread_id, "u": end_user_id})


def parse_thread_cursor(cursor: str, end_user_id: str | None) -> tuple[datetime, str]:
    data = _decode(cursor)
    if data.get("k") != "t" or not isinstance(data.get("i"), str) or not isinstance(data.get("c"), str):
        raise malformed()
    try:
        created_at = datetime.fromisoformat(data["c"])
    except ValueError:
        raise malformed() from None
    if created_at.tzinfo is None:
        raise malformed()
    if data.get("u") != end_user_id:
        raise malformed("The cursor belongs to another listing (end_user_id).")
    return created_at, data["i"]
