"""``x-relay-metadata``: caller-supplied key/value pairs kept in the request log.

The header holds a JSON object of string keys to string, number or boolean
values (at most 16 pairs, keys ≤ 64 and values ≤ 512 characters), e.g.
``x-relay-metadata: {"feature": "search", "user_tier": "pro"}``.  Anything else
is a 400 before any work is done, so a tagging bug never goes unnoticed.  Text
the request log cannot store (a NUL character: Postgres refuses it in jsonb) is
refused here too, so no tag can make a served request's log row unwritable.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from relay_server.errors import ErrorKind, RelayError

HEADER = "x-relay-metadata"
MAX_PAIRS = 16
MAX_KEY = 64
MAX_VALUE = 512


def _bad(why: str) -> RelayError:
    return RelayError(
        ErrorKind.BAD_REQUEST,
        f"Invalid {HEADER} header: {why}. Expected a JSON object of at most {MAX_PAIRS} string keys to "
        "string, number or boolean values.",
        code="invalid_header",
    )


def parse_request_tags(metadata: Mapping[str, str]) -> dict[str, str] | None:
    raw = metadata.get(HEADER)
    if raw is None or not raw.strip():
        return None
    try:
        tags = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("not valid JSON") from None
    if not isinstance(tags, dict):
        raise _bad("not a JSON object")
    if len(tags) > MAX_PAIRS:
        raise _bad(f"{len(tags)} pairs")
    parsed: dict[str, str] = {}
    for key, value in tags.items():
        if not key or len(key) > MAX_KEY:
            raise _bad(f"key {key[:MAX_KEY]!r} is empty or longer than {MAX_KEY} characters")
        if "\x00" in key:
            raise _bad(f"key {key!r} contains a NUL (\\u0000) character")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            value = str(value)
        else:
            raise _bad(f"value of {key!r} is not a string, number or boolean")
        if len(value) > MAX_VALUE:
            raise _bad(f"value of {key!r} is longer than {MAX_VALUE} characters")
        if "\x00" in value:
            raise _bad(f"value of {key!r} contains a NUL (\\u0000) character")
        parsed[key] = value
    return parsed
