"""relay.admin.v1.ThreadBrowserService: proto ↔ ``tenancy.thread_browser.ThreadBrowser``.

Read-only.  Threads page by (created_at, id) like every admin list; messages
by their ``seq`` in the thread (the token carries the last ``seq`` shown).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2

from relay_proto.relay.admin.v1 import threads_pb2, threads_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import decode_cursor, handle, limit, paged, timestamp
from relay_server.api.pagination import decode_token, encode_token, page_size
from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.calls import Call
from relay_server.tenancy.thread_browser import MessageRow, ThreadBrowser, ThreadRow
from relay_server.threads.blocks import text_of


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        out.update(value)
    return out


def thread_message(row: ThreadRow) -> threads_pb2.TenantThread:
    return threads_pb2.TenantThread(
        id=row.id, title=row.title or "", metadata=_struct(row.metadata), end_user_id=row.end_user_id or "",
        api_key_id=row.api_key_id or "", message_count=row.message_count, total_tokens=row.total_tokens,
        create_time=timestamp(row.created_at), update_time=timestamp(row.updated_at),
    )  # fmt: skip


def message_message(row: MessageRow) -> threads_pb2.TenantThreadMessage:
    blocks = [b for b in row.content if isinstance(b, dict)]
    return threads_pb2.TenantThreadMessage(
        id=row.id, thread_id=row.thread_id, seq=row.seq, role=row.role, text=text_of(blocks),
        content=[_struct(b) for b in blocks], status=row.status, model=row.model_id or "",
        request_id=row.request_id or "", input_tokens=row.input_tokens or 0, output_tokens=row.output_tokens or 0,
        error=row.error or "", create_time=timestamp(row.created_at), complete_time=timestamp(row.completed_at),
    )  # fmt: skip


def _after_seq(token: str) -> int | None:
    if not token:
        return None
    raw = decode_token(token)
    if not raw.isdigit():
        raise RelayError(ErrorKind.BAD_REQUEST, "The page_token is malformed.", param="page_token")
    return int(raw)


class ThreadBrowserServicer(threads_pb2_grpc.ThreadBrowserServiceServicer):
    def __init__(self, auth: AdminAuthenticator, browser: ThreadBrowser) -> None:
        self._auth = auth
        self._browser = browser

    async def ListTenantThreads(self, request, context):  # noqa: N802 (gRPC naming)
        async def run(call: Call) -> threads_pb2.ListTenantThreadsResponse:
            rows = await self._browser.threads(
                call, request.tenant_id, end_user_id=request.end_user_id or None,
                after=decode_cursor(request.page_token), limit=limit(request.page_size),
            )  # fmt: skip
            rows, token = paged(rows, request.page_size, lambda r: (r.created_at, r.id))
            return threads_pb2.ListTenantThreadsResponse(threads=[thread_message(r) for r in rows], next_page_token=token)

        return await handle(context, self._auth, run)

    async def ListTenantThreadMessages(self, request, context):  # noqa: N802
        async def run(call: Call) -> threads_pb2.ListTenantThreadMessagesResponse:
            if not request.thread_id.strip():
                raise RelayError(ErrorKind.BAD_REQUEST, "thread_id is required.", param="thread_id")
            size = page_size(request.page_size)
            thread, rows = await self._browser.messages(
                call, request.tenant_id, request.thread_id, after_seq=_after_seq(request.page_token), limit=size + 1
            )
            token = encode_token(str(rows[size - 1].seq)) if len(rows) > size else ""
            return threads_pb2.ListTenantThreadMessagesResponse(
                thread=thread_message(thread), messages=[message_message(r) for r in rows[:size]], next_page_token=token
            )

        return await handle(context, self._auth, run)


def register_thread_browser(server: grpc.aio.Server, auth: AdminAuthenticator, browser: ThreadBrowser) -> str:
    """Add ThreadBrowserService to ``server``; returns its full name (for reflection and health)."""
    threads_pb2_grpc.add_ThreadBrowserServiceServicer_to_server(ThreadBrowserServicer(auth, browser), server)
    return threads_pb2.DESCRIPTOR.services_by_name["ThreadBrowserService"].full_name
