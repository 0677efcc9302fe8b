"""Incremental Server-Sent Events parser.

Fed raw bytes exactly as they come off the socket (chunk boundaries anywhere,
even inside a UTF-8 sequence or between ``\\r`` and ``\\n``) and returns the
events completed so far.  It follows the WHATWG rules that matter to provider
streams: ``event:`` / ``data:`` fields, multi-line ``data`` joined with ``\\n``,
``:`` comment lines ignored, one optional space after the colon stripped, an
event dispatched on a blank line, an unterminated event at EOF discarded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    """The ``event:`` field, ``"message"`` when absent (the spec's default)."""
    data: str


class SSEParser:
    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            return self._feed_lines(buffer)
        # Providers end lines with "\n" only: one split, and a "data: " line (nearly every
        # line of a provider stream) taken without the general field parsing.
        *lines, self._buffer = buffer.split(b"\n")
        events: list[SSEEvent] = []
        data = self._data
        for raw in lines:
            if raw[:6] == b"data: ":
                data.append(raw[6:].decode("utf-8", errors="replace"))
            elif not raw and data:  # the blank line that ends an event
                events.append(SSEEvent(self._event or "message", data[0] if len(data) == 1 else "\n".join(data)))
                self._event = ""
                self._data = data = []
            else:
                self._line(raw)  # a blank line with no data, a comment, another field: nothing to dispatch
        return events

    def _feed_lines(self, buffer: bytes) -> list[SSEEvent]:
        """Any line endings ("\r\n", "\n" or a lone "\r"), one line at a time."""
        events: list[SSEEvent] = []
        start = 0
        end = len(buffer)
        while start < end:
            nl = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, nl if nl >= 0 else end)
            if cr >= 0:
                # A lone "\r" at the very end may be the first half of "\r\n":
                # wait for the next chunk before deciding.
                if cr == end - 1:
                    break
                line_end = cr
                start_next = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            elif nl >= 0:
                line_end = nl
                start_next = nl + 1
            else:
                break
            event = self._line(buffer[start:line_end])
            if event is not None:
                events.append(event)
            start = start_next
        self._buffer = buffer[start:]
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event = ""
            self._data = []
            return event
        # Decoding per complete line keeps multi-byte characters whole.
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":
            return None
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        # "id" and "retry" carry nothing a provider stream needs.
        return None
