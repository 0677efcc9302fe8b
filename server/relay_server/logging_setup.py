"""Structured JSON logs: one object per line, with the request's fields.

Callers pass context through ``extra={...}``; this formatter copies those
fields into the JSON object, and adds the current request's request_id,
tenant_id, key_hint, model and provider (``observability.request_context``)
to every line written while a request is served.  Secrets never reach it: the
pipeline logs key hints, never keys or headers, and ``observability.redaction``
masks secret-named fields and any key or bearer credential that slipped in.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from relay_server.observability.redaction import MASK, is_secret_field, scrub
from relay_server.observability.request_context import log_fields

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                entry[key] = MASK if is_secret_field(key) else value
        for key, value in log_fields().items():
            entry.setdefault(key, value)  # explicit ``extra`` wins
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(orjson.dumps(entry, default=str).decode())


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
