"""Structured JSON log lines: one object per line, with the request's fields.

Callers pass context through ``extra={...}``; this formatter copies those
fields into the JSON object, and adds the current request's request_id,
tenant_id, key_hint, model and provider (``observability.request_context``)
to every line written while a request is served.  Secrets never reach it: the
pipeline logs key hints, never keys or headers, and ``observability.redaction``
masks secret-named fields and any key or bearer credential that slipped in.

The line every request writes goes through ``info_line`` (no ``LogRecord``);
``logging_setup.configure`` installs the handler and formatter in a process.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping

import orjson

from relay_server.errors import clip
from relay_server.observability.redaction import MASK, is_secret_field, scrub
from relay_server.observability.request_context import log_fields

# A logged value is clipped to this many characters: a caller's 20,000-character
# model name must not become a 20 kB log line on every request.
MAX_FIELD_CHARS = 2000

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        fields = ((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        return json_line(record.created, record.levelname, record.name, record.getMessage(), fields, exc)


def json_line(
    created: float, level: str, logger: str, message: str, fields: Iterable[tuple[str, object]], exc: str | None = None
) -> str:
    """One log line: the fields (secret names masked, long values clipped, None left out), then the
    current request's fields, the whole line scrubbed of any key or credential that slipped in."""
    entry: dict[str, object] = {
        "ts": _timestamp(created),
        "level": level.lower(),
        "logger": logger,
        "msg": clip(message, MAX_FIELD_CHARS),
    }
    for key, value in fields:
        if value is None:
            continue
        secret = _SECRET_NAMES.get(key)
        if secret is None:
            secret = _remember_secret_name(key)
        if secret:
            entry[key] = MASK
        elif value.__class__ is str and len(value) > MAX_FIELD_CHARS:
            entry[key] = clip(value, MAX_FIELD_CHARS)
        else:
            entry[key] = value
    for key, value in log_fields().items():
        entry.setdefault(key, _clipped(value))  # explicit ``extra`` wins
    if exc is not None:
        entry["exc"] = exc
    return scrub(orjson.dumps(entry, default=str).decode())


# (second, its text): a worker writes hundreds of lines a second, each formatting the same one.
_SECOND: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """``2026-12-06T01:02:03.456Z`` (UTC, milliseconds)."""
    global _SECOND  # noqa: PLW0603 (a one-entry cache; a race only formats a second twice)
    second = int(created)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


def info_line(logger: logging.Logger, message: str, fields: Mapping[str, object]) -> None:
    """``logger.info(message, extra=fields)``, the same line, without building a ``LogRecord``.

    For the one line every request writes: the record, its handler lookup and the formatter's walk
    over the record's ~40 attributes cost about as much as the rest of the request's metering.
    Taken only when Relay's own handler is the one that would write the line (``configure``);
    anything else (a test's capturing handler, a filter on the logger) gets the ordinary record.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_line_handler(logger)
    if handler is not None:
        try:
            line = json_line(time.time(), "INFO", logger.name, message, fields.items())
        except Exception:  # noqa: BLE001 (a line that cannot be built goes the ordinary way, which reports it)
            pass
        else:
            handler.add_line(line, logging.INFO)
            return
    logger.info(message, extra=fields)


def _sole_line_handler(logger: logging.Logger) -> BufferedLineHandler | None:
    """Relay's JSON line handler when it is the only handler the logger's records reach."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    if len(found) != 1:
        return None
    handler = found[0]
    if (type(handler) is not BufferedLineHandler or type(handler.formatter) is not JsonFormatter
            or handler.level > logging.INFO or any(f is not drop_job_arguments for f in handler.filters)):
        return None
    return handler


def _clipped(value: object) -> object:
    return clip(value, MAX_FIELD_CHARS) if isinstance(value, str) else value


# ``extra`` names come from the code, a small fixed set: whether each is a secret's name is
# decided once (the per-record check cost as much as the rest of the line).
_SECRET_NAMES: dict[str, bool] = {}


def _remember_secret_name(key: str) -> bool:
    secret = is_secret_field(key)
    if len(_SECRET_NAMES) < 4096:  # bounded, whatever a caller passes as ``extra``
        _SECRET_NAMES[key] = secret
    return secret


# procrastinate names a job as ``task[id](kwarg=value, ...)`` in its messages and
# puts the job (arguments included) in its log fields.  Relay's job arguments
# carry no secrets, but they are tenant data: logs get the job's name and id only.
_JOB_CALL = re.compile(r"([\w:.-]+\[\d+\])\(.*?\)(?=[ ,:;]|$)", re.DOTALL)


def drop_job_arguments(record: logging.LogRecord) -> bool:
    """Handler filter: strips job arguments from the job queue's log records."""
    if record.name.startswith("procrastinate"):
        message = record.getMessage()
        job = record.__dict__.get("job")
        if isinstance(job, dict):
            call = job.get("call_string")
            if isinstance(call, str) and call:  # exact, whatever the arguments contain
                message = message.replace(call, f"{job.get('task_name')}[{job.get('id')}]")
            record.job = {k: v for k, v in job.items() if k in ("id", "task_name", "queue", "status", "attempts")}
        record.msg = _JOB_CALL.sub(r"\1", message)
        record.args = None
    return True


class BufferedLineHandler(logging.StreamHandler):
    """Lines leave in batches: at most ``flush_s`` late, at once for warnings and errors.

    Why: one ``write`` per request line costs far more than the line itself in a
    worker — the syscall drops the GIL, and gRPC's poller thread takes it.  Like
    Envoy's access log (flushed every second), lines are batched; on a crash at
    most ``flush_s`` of info lines are lost (the request log in Postgres is the
    record of every request, not these lines).  A clean exit flushes everything
    (``logging.shutdown``).
    """

    def __init__(self, stream: object = None, *, flush_s: float = 0.1, max_bytes: int = 64 * 1024) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._max_bytes = max_bytes
        self._ticker = threading.Thread(target=self._tick, args=(flush_s,), name="log-flush", daemon=True)
        self._ticker.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 (logging's contract: report, never raise)
            self.handleError(record)
            return
        self._add(line, record.levelno)  # under the handler's lock (Handler.handle holds it)

    def add_line(self, line: str, level: int) -> None:
        """A line already formatted (``info_line``), in turn with the others."""
        with self.lock:  # type: ignore[union-attr]
            self._add(line, level)

    def _add(self, line: str, level: int) -> None:
        line += self.terminator
        self._lines.append(line)
        self._size += len(line)
        if level >= logging.WARNING or self._size >= self._max_bytes:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if self._lines:
            text, self._lines, self._size = "".join(self._lines), [], 0
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:  # noqa: BLE001
                pass  # stderr gone (closed pipe): nothing sensible left to do with log lines

    def _tick(self, flush_s: float) -> None:
        while True:
            time.sleep(flush_s)
            self.flush()
