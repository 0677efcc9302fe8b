"""Logging for a Relay process: JSON lines (``observability.log_lines``) to stderr, batched."""

from __future__ import annotations

import logging
import sys

from relay_server.observability.log_lines import BufferedLineHandler, JsonFormatter, drop_job_arguments


def configure(level: str = "INFO") -> None:
    handler = BufferedLineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(drop_job_arguments)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The job queue's per-job INFO lines repeat what Relay logs itself (failures, with kind and tenant).
    logging.getLogger("procrastinate").setLevel(max(logging.WARNING, root.level))
    # The JSON line uses none of these; computing them costs a frame walk and lookups per record.
    logging.logThreads = False
    logging.logProcesses = False
    # Nor the caller's file and line: the logging HOWTO's "set logging._srcfile to None" skips
    # the frame walk every record otherwise makes.
    logging._srcfile = None  # noqa: SLF001
    logging.logMultiprocessing = False
