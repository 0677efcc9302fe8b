"""relay.admin.v1.ApiKeyService: proto ↔ ``tenancy.keys.ApiKeyService``."""

from __future__ import annotations

from relay_proto.relay.admin.v1 import api_keys_pb2, api_keys_pb2_grpc
from relay_server.api import admin_messages as m
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import decode_cursor, from_timestamp, handle, limit, paged, timestamp
from relay_server.tenancy.calls import Call
from relay_server.tenancy.keys import PATCHABLE, ApiKeyService, KeyPatch, KeyRequest


def _rate_limits(message: api_keys_pb2.RateLimits) -> dict[str, int]:
    return {"rpm": message.rpm, "tpm": message.tpm, "requests_per_day": message.requests_per_day}


def _patch(request: api_keys_pb2.UpdateApiKeyRequest) -> KeyPatch:
    key = request.api_key
    paths = {p.removeprefix("api_key.") for p in request.update_mask.paths}
    if not paths:  # no mask: the fields the request sets
        paths = {"name"} if key.name else set()
        paths |= {"allowed_models"} if key.allowed_models else set()
        paths |= {f for f in ("rate_limits", "spend_cap", "expire_time") if key.HasField(f)}
    # Unknown paths reach the service, which names them in its 400.
    known = {p for p in paths if p in PATCHABLE}
    return KeyPatch(
        fields=frozenset(paths),
        name=key.name,
        expires_at=from_timestamp(key, "expire_time") if "expire_time" in known else None,
        allowed_models=tuple(key.allowed_models),
        rate_limits=_rate_limits(key.rate_limits),
        spend_cap_amount=key.spend_cap.amount_usd,
        spend_cap_window=m.spend_window_name(key.spend_cap.window),
    )


class ApiKeyServicer(api_keys_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, auth: AdminAuthenticator, keys: ApiKeyService) -> None:
        self._auth = auth
        self._keys = keys

    async def CreateApiKey(self, request, context):  # noqa: N802 (gRPC naming)
        key = request.api_key

        async def run(call: Call) -> api_keys_pb2.CreateApiKeyResponse:
            spec = KeyRequest(
                name=key.name,
                environment=m.environment_name(key.environment),
                scope=m.scope_name(key.scope),
                end_user_id=key.end_user_id,
                allowed_models=tuple(key.allowed_models),
                rate_limits=_rate_limits(key.rate_limits),
                spend_cap_amount=key.spend_cap.amount_usd,
                spend_cap_window=m.spend_window_name(key.spend_cap.window),
                expires_at=from_timestamp(key, "expire_time"),
                parent_key_id=request.parent_key_id,
            )
            row, secret = await self._keys.create(call, request.tenant_id, spec)
            return api_keys_pb2.CreateApiKeyResponse(api_key=m.key_message(row), secret=secret)

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def ListApiKeys(self, request, context):  # noqa: N802
        async def run(call: Call) -> api_keys_pb2.ListApiKeysResponse:
            rows = await self._keys.list(
                call,
                request.tenant_id,
                status=m.key_status_name(request.status),
                end_user_id=request.end_user_id or None,
                after=decode_cursor(request.page_token),
                limit=limit(request.page_size),
            )
            rows, token = paged(rows, request.page_size, lambda r: (r.created_at, r.id))
            return api_keys_pb2.ListApiKeysResponse(api_keys=[m.key_message(r) for r in rows], next_page_token=token)

        return await handle(context, self._auth, run)

    async def GetApiKey(self, request, context):  # noqa: N802
        async def run(call: Call) -> api_keys_pb2.GetApiKeyResponse:
            row = await self._keys.get(call, request.tenant_id, request.key_id)
            return api_keys_pb2.GetApiKeyResponse(api_key=m.key_message(row))

        return await handle(context, self._auth, run)

    async def UpdateApiKey(self, request, context):  # noqa: N802
        async def run(call: Call) -> api_keys_pb2.UpdateApiKeyResponse:
            row = await self._keys.update(call, request.tenant_id, request.api_key.id, _patch(request))
            return api_keys_pb2.UpdateApiKeyResponse(api_key=m.key_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def RevokeApiKey(self, request, context):  # noqa: N802
        async def run(call: Call) -> api_keys_pb2.RevokeApiKeyResponse:
            row = await self._keys.revoke(call, request.tenant_id, request.key_id)
            return api_keys_pb2.RevokeApiKeyResponse(api_key=m.key_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def RotateApiKey(self, request, context):  # noqa: N802
        async def run(call: Call) -> api_keys_pb2.RotateApiKeyResponse:
            new, secret, old = await self._keys.rotate(call, request.tenant_id, request.key_id, request.grace_period_seconds)
            return api_keys_pb2.RotateApiKeyResponse(
                api_key=m.key_message(new), secret=secret, old_secret_expire_time=timestamp(old.grace_expires_at)
            )

        return await handle(context, self._auth, run, idempotency_key=request.request_id)
