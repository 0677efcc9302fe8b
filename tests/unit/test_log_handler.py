"""The buffered log handler: info lines batched, warnings at once, nothing lost on flush; ``info_line``."""

from __future__ import annotations

import io
import logging

import orjson

from relay_server.observability.log_lines import BufferedLineHandler, JsonFormatter, drop_job_arguments, info_line
from relay_server.observability.redaction import MASK
from relay_server.observability.request_context import bind_request


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"relay.test.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_info_lines_wait_for_the_flush_and_keep_their_order() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_s=3600)
    handler.setFormatter(JsonFormatter())
    log = _logger(handler)
    log.info("first")
    log.info("second")
    assert stream.getvalue() == ""
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert [line.split('"msg":"')[1].split('"')[0] for line in lines] == ["first", "second"]


def test_a_warning_writes_everything_before_it_at_once() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_s=3600)
    log = _logger(handler)
    log.info("before")
    log.warning("trouble")
    assert stream.getvalue() == "before\ntrouble\n"


def test_a_full_buffer_is_written_without_waiting() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_s=3600, max_bytes=100)
    log = _logger(handler)
    for i in range(30):
        log.info("line %02d", i)
    written = stream.getvalue().splitlines()
    assert 0 < len(written) < 30 and written == [f"line {i:02d}" for i in range(len(written))]


def test_the_ticker_flushes_on_its_own() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_s=0.01)
    log = _logger(handler)
    log.info("eventually")
    for _ in range(500):
        if stream.getvalue():
            break
        handler._ticker.join(0.01)  # noqa: SLF001 (just a short wait)
    assert stream.getvalue() == "eventually\n"


def test_a_closed_stream_does_not_raise_into_the_caller() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_s=3600)
    log = _logger(handler)
    stream.close()
    log.warning("nowhere to go")  # must not raise


# -- info_line: the per-request line without a LogRecord -------------------------------------

FIELDS = {"request_id": "req_1", "status": "success", "error_code": None, "api_key": "rly_live_sk_abcdefghijkl",
          "model": "m" * 3000, "note": "Bearer abcdefghijklmnop", "latency_ms": 12}  # fmt: skip


def _json_logger(stream: io.StringIO) -> tuple[logging.Logger, BufferedLineHandler]:
    handler = BufferedLineHandler(stream, flush_s=3600)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(drop_job_arguments)
    return _logger(handler), handler


def _written(stream: io.StringIO, handler: BufferedLineHandler) -> list[dict[str, object]]:
    handler.flush()
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_info_line_writes_what_a_log_record_would() -> None:
    stream = io.StringIO()
    log, handler = _json_logger(stream)
    log.info("request", extra=FIELDS)
    info_line(log, "request", FIELDS)
    with bind_request("req_outer", "chat"):  # inside a request, its own fields are added
        info_line(log, "request", {"status": "success"})
    by_record, direct, bound = _written(stream, handler)
    assert {k: v for k, v in by_record.items() if k != "ts"} == {k: v for k, v in direct.items() if k != "ts"}
    assert direct["api_key"] == MASK and "abcdefghijkl" not in str(direct)  # secret name, and scrubbed text
    assert len(str(direct["model"])) < 2100 and "error_code" not in direct
    assert direct["level"] == "info" and direct["logger"] == log.name and str(direct["ts"]).endswith("Z")
    assert bound["request_id"] == "req_outer"


def test_info_line_leaves_other_handlers_to_the_ordinary_record() -> None:
    stream = io.StringIO()
    log, handler = _json_logger(stream)
    seen: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = seen.append  # type: ignore[method-assign]
    log.addHandler(capture)
    info_line(log, "request", {"status": "success"})
    assert [r.getMessage() for r in seen] == ["request"] and seen[0].status == "success"
    assert [line["msg"] for line in _written(stream, handler)] == ["request"]


def test_info_line_respects_the_level() -> None:
    stream = io.StringIO()
    log, handler = _json_logger(stream)
    log.setLevel(logging.WARNING)
    info_line(log, "request", {"status": "success"})
    assert _written(stream, handler) == []
