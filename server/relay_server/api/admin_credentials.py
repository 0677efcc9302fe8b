"""relay.admin.v1.ProviderCredentialService: proto ↔ ``crypto.vault.CredentialVault``.

REST through Envoy: ``POST/GET /v1/provider-credentials``,
``POST /v1/provider-credentials/{id}:rotate`` and ``…:disable``.
"""

from __future__ import annotations

from typing import Any

import grpc

from relay_proto.relay.admin.v1 import credentials_pb2, credentials_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_registry import admin_authenticator
from relay_server.api.admin_support import handle, timestamp
from relay_server.api.pagination import decode_token, encode_token, page_size
from relay_server.domain.credentials import CredentialRow
from relay_server.tenancy.calls import Call
from relay_server.tenancy.vault import CredentialSpec, CredentialVault


def credential_message(row: CredentialRow) -> credentials_pb2.ProviderCredential:
    return credentials_pb2.ProviderCredential(
        id=row.id,
        tenant_id=row.tenant_id or "",
        provider_id=row.provider_id,
        name=row.name,
        key_hint=row.key_hint,
        base_url=row.base_url or "",
        status=row.status,
        rpm_limit=row.rpm_limit or 0,
        tpm_limit=row.tpm_limit or 0,
        priority=row.priority,
        relay_owned=row.relay_owned,
        create_time=timestamp(row.created_at),
    )


class ProviderCredentialServicer(credentials_pb2_grpc.ProviderCredentialServiceServicer):
    def __init__(self, auth: AdminAuthenticator, vault: CredentialVault) -> None:
        self._auth = auth
        self._vault = vault

    async def CreateProviderCredential(self, request, context):  # noqa: N802 (gRPC naming)
        cred = request.credential

        async def run(call: Call) -> credentials_pb2.CreateProviderCredentialResponse:
            spec = CredentialSpec(
                provider_id=cred.provider_id.strip(),
                name=cred.name,
                base_url=cred.base_url,
                rpm_limit=cred.rpm_limit,
                tpm_limit=cred.tpm_limit,
                priority=cred.priority,
            )
            row = await self._vault.create(call, request.tenant_id, spec, request.secret)
            return credentials_pb2.CreateProviderCredentialResponse(credential=credential_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def ListProviderCredentials(self, request, context):  # noqa: N802
        async def run(call: Call) -> credentials_pb2.ListProviderCredentialsResponse:
            size = page_size(request.page_size)
            after = decode_token(request.page_token) if request.page_token else None
            rows = await self._vault.list(
                call, request.tenant_id, provider_id=request.provider_id or None, after_id=after, limit=size + 1
            )
            token = encode_token(rows[size - 1].id) if len(rows) > size else ""
            return credentials_pb2.ListProviderCredentialsResponse(
                credentials=[credential_message(r) for r in rows[:size]], next_page_token=token
            )

        return await handle(context, self._auth, run)

    async def RotateProviderCredential(self, request, context):  # noqa: N802
        async def run(call: Call) -> credentials_pb2.RotateProviderCredentialResponse:
            row = await self._vault.rotate(call, request.tenant_id, request.credential_id, request.secret)
            return credentials_pb2.RotateProviderCredentialResponse(credential=credential_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def DisableProviderCredential(self, request, context):  # noqa: N802
        async def run(call: Call) -> credentials_pb2.DisableProviderCredentialResponse:
            row = await self._vault.disable(call, request.tenant_id, request.credential_id)
            return credentials_pb2.DisableProviderCredentialResponse(credential=credential_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)


def register_credential_service(server: grpc.aio.Server, app: Any) -> str:
    """Add the service (principals resolved like every admin service); returns its full name."""
    servicer = ProviderCredentialServicer(admin_authenticator(app), app.routing.vault)
    credentials_pb2_grpc.add_ProviderCredentialServiceServicer_to_server(servicer, server)
    return credentials_pb2.DESCRIPTOR.services_by_name["ProviderCredentialService"].full_name
