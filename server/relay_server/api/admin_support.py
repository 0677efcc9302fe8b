"""What every admin RPC does around its handler: resolve the principal,
build the ``Call`` (client IP, request ids), map any failure to the error
wire format, and page tokens for keyset pagination.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2

from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.error_mapping import abort, as_relay_error
from relay_server.api.openai_service import request_metadata
from relay_server.api.pagination import decode_token, encode_token, page_size
from relay_server.domain.request import new_request_id
from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.calls import Call

T = TypeVar("T")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``settings.trusted_proxies``: comma-separated addresses or CIDR blocks of the Envoy hop(s)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def client_ip(metadata: Mapping[str, str], peer: str, trusted_proxies: Iterable[Network] = ()) -> str | None:
    """The caller's address, as the audit log records it.

    Envoy (``use_remote_address``) appends the address it accepted the
    connection from to ``x-forwarded-for``, so its LAST entry is the one a
    client cannot forge, but only when the connection really comes from
    Envoy: a native gRPC client can send any header it likes.  So the header
    counts only when the peer is one of the ``trusted_proxies``; otherwise
    the peer itself is the caller.
    """
    # peer: "ipv4:127.0.0.1:5000" | "ipv6:[::1]:5000"
    kind, _, rest = peer.partition(":")
    own: str | None = None
    if kind == "ipv6" and rest.startswith("["):
        own = _ip(rest[1 : rest.find("]")])
    elif kind == "ipv4":
        own = _ip(rest.rsplit(":", 1)[0])
    forwarded = metadata.get("x-forwarded-for", "")
    if own is None or not forwarded or not any(ipaddress.ip_address(own) in net for net in trusted_proxies):
        return own
    candidates = [part.strip() for part in forwarded.split(",") if part.strip()]
    return _ip(candidates[-1]) if candidates else own


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


async def handle(
    context: grpc.aio.ServicerContext,
    auth: AdminAuthenticator,
    handler: Callable[[Call], Awaitable[T]],
    *,
    idempotency_key: str = "",
) -> T:
    request_id = new_request_id()
    try:
        metadata = request_metadata(context)
        principal = await auth.resolve(metadata)
        ip = client_ip(metadata, context.peer() or "", auth.trusted_proxies)
        call = Call(principal, request_id, ip).with_idempotency_key(idempotency_key)
        response = await handler(call)
    except Exception as exc:  # noqa: BLE001 (every failure becomes a typed error)
        await abort(context, as_relay_error(exc), request_id)
    await context.send_initial_metadata((("x-request-id", request_id),))
    return response


# --- keyset page tokens: (created_at, id) of the last row of a page ------------------------


def decode_cursor(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    raw = decode_token(token)
    stamp, sep, row_id = raw.partition("|")
    try:
        moment = datetime.fromisoformat(stamp)
        if not sep or not row_id or moment.tzinfo is None:
            raise ValueError(raw)
        return moment, row_id
    except ValueError:
        raise RelayError(ErrorKind.BAD_REQUEST, "The page_token is malformed.", param="page_token") from None


def encode_cursor(stamp: datetime, row_id: str) -> str:
    """The page token after the row stamped ``stamp`` with id ``row_id`` (``decode_cursor`` reads it)."""
    return encode_token(f"{stamp.isoformat()}|{row_id}")


def paged(rows: list[T], requested: int, cursor: Callable[[T], tuple[datetime, str]]) -> tuple[list[T], str]:
    """Trim a page fetched with ``limit(requested)`` and give the next token ("" at the end)."""
    size = page_size(requested)
    if len(rows) <= size:
        return rows, ""
    rows = rows[:size]
    return rows, encode_cursor(*cursor(rows[-1]))


def limit(requested: int) -> int:
    """Rows to fetch for a page: one more than it holds, to know whether another follows."""
    return page_size(requested) + 1


# --- timestamps ---------------------------------------------------------------------------


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(message: object, field: str) -> datetime | None:
    """The datetime in ``message.field`` if the field is set (aware, UTC)."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)
