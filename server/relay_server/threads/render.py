"""Rows → the JSON objects and protos of ``relay.v1`` threads.

One source of truth: ``message_json`` / ``thread_json`` build the JSON object
with every field of the proto (defaults included, as Envoy's transcoder prints
them), and the proto is parsed from that JSON.  So a message looks the same in
a server-sent event, a SendMessage JSON body and a transcoded ListMessages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from relay_proto.relay.v1 import threads_pb2
from relay_server.storage.postgres.threads import MessageRow, ThreadRow

_INT32_MAX = 2**31 - 1


def _unix(at: datetime | None) -> int:
    return int(at.timestamp()) if at is not None else 0


def message_json(row: MessageRow, content: Sequence[Mapping[str, Any]] | None = None, *, status: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "thread.message",
        "thread_id": row.thread_id,
        "seq": row.seq,
        "role": row.role,
        "content": [dict(b) for b in (row.content if content is None else content)],
        "status": status or row.status,
        "model": row.model_id or "",
        "request_id": row.request_id or "",
        "input_tokens": row.input_tokens or 0,
        "output_tokens": row.output_tokens or 0,
        "error": row.error or "",
        "created_at": _unix(row.created_at),
        "completed_at": _unix(row.completed_at),
    }


def thread_json(row: ThreadRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "thread",
        "end_user_id": row.end_user_id or "",
        "title": row.title or "",
        "metadata": dict(row.metadata or {}),
        "message_count": row.message_count,
        "total_tokens": min(row.total_tokens, _INT32_MAX),
        "created_at": _unix(row.created_at),
        "updated_at": _unix(row.updated_at),
    }


def message_proto(message: Mapping[str, Any]) -> threads_pb2.ThreadMessage:
    return json_format.ParseDict(dict(message), threads_pb2.ThreadMessage())


def thread_proto(thread: Mapping[str, Any]) -> threads_pb2.Thread:
    return json_format.ParseDict(dict(thread), threads_pb2.Thread())
