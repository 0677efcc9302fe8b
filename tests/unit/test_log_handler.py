"""The buffered log handler: info lines batched, warnings at once, nothing lost on flush."""

from __future__ import annotations

import io
import logging

from relay_server.logging_setup import BufferedLineHandler, JsonFormatter


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
