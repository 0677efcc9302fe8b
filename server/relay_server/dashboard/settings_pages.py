"""Tenant settings: the configuration entries a tenant sets itself (``GetTenantConfig`` /
``UpdateTenantConfig``; ``settings:read`` / ``:update``) and its own provider credentials
(BYOK, ``ListProviderCredentials`` / ``CreateProviderCredential`` /
``DisableProviderCredential``; ``credentials:*``).

A credential's secret goes from the form to the API once and is never shown
again: the page lists credentials by their hint only.  Entries the server
refuses come back with the server's own message (it knows the valid models,
URLs and amounts); an empty field clears its entry.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from relay_proto.relay.admin.v1 import credentials_pb2
from relay_server.dashboard.accounts import Membership
from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import PAGE_SIZE, _auth, _member, _provisioning, _status, ts
from relay_server.dashboard.web import API, BASE, render

routes = web.RouteTableDef()

# (config key, label, help): what a tenant may set for itself here.
FIELDS = (
    ("allowed_models", "Allowed models (comma-separated, empty: every model)", "models"),
    ("spend_cap_usd", "Tenant spend cap in USD (empty: none)", "amount"),
    ("spend_cap_window", "Spend cap window (daily, monthly or total)", "text"),
    ("default_cache_ttl_sec", "Response cache lifetime in seconds (empty: the default)", "number"),
    ("webhook_url", "Webhook URL (https://; empty: no webhooks)", "url"),
)


def _shown(key: str, value: str) -> str:
    """A stored entry as the form shows it (allowed models are stored as a JSON array)."""
    if key == "allowed_models" and value:
        try:
            return ", ".join(json.loads(value))
        except (ValueError, TypeError):
            return value
    return value


def _stored(key: str, value: str) -> str:
    if key == "allowed_models" and value:
        return json.dumps([m.strip() for m in value.split(",") if m.strip()])
    return value


async def _settings_page(request: web.Request, member: Membership, status: int = 200, **extra: Any) -> web.Response:
    context: dict[str, Any] = {"error": "", "notice": "", "config": {}, "credentials": [], "credentials_error": ""}
    context.update(extra)
    api, auth = request.app[API].client, _auth(request, member)
    try:
        reply = await api.tenants.get_tenant_config(tenant_id=member.tenant_id, **auth)
        context["config"] = {key: _shown(key, reply.config.get(key, "")) for key, _, _ in FIELDS}
    except ApiError as exc:
        context["error"] = context["error"] or api_error_message(exc)
        status = _status(exc) if status == 200 else status
    if "credentials:read" in member.permissions:
        try:
            creds = await api.provider_credentials.list_provider_credentials(page_size=PAGE_SIZE, **auth)
            context["credentials"] = list(creds.credentials)
        except ApiError as exc:  # e.g. BYOK not in the tenant's plan: say so next to the section
            context["credentials_error"] = api_error_message(exc)
    return render(request, "settings.html", status, member=member, fields=FIELDS, ts=ts, **context)


@routes.get(f"{BASE}/settings")
async def settings(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    if (waiting := _provisioning(request, member)) is not None:
        return waiting
    return await _settings_page(request, member)


@routes.post(f"{BASE}/settings")
async def update_settings(request: web.Request) -> web.StreamResponse:
    """Send only the entries that changed (the server audits each change)."""
    member = _member(request)
    form = await request.post()
    api, auth = request.app[API].client, _auth(request, member)
    try:
        current = (await api.tenants.get_tenant_config(tenant_id=member.tenant_id, **auth)).config
        changes = {}
        for key, _, _ in FIELDS:
            wanted = _stored(key, str(form.get(key, "")).strip())
            if wanted != current.get(key, ""):
                changes[key] = wanted
        if not changes:
            return await _settings_page(request, member, notice="Nothing changed.")
        await api.tenants.update_tenant_config(tenant_id=member.tenant_id, config=changes, **auth)
    except ApiError as exc:
        return await _settings_page(request, member, _status(exc), error=api_error_message(exc))
    return await _settings_page(request, member, notice=f"Saved: {', '.join(sorted(changes))}.")


@routes.post(f"{BASE}/settings/webhook-test")
async def webhook_test(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    try:
        reply = await request.app[API].client.tenants.send_test_webhook(
            tenant_id=member.tenant_id, **_auth(request, member)
        )
    except ApiError as exc:
        return await _settings_page(request, member, _status(exc), error=api_error_message(exc))
    return await _settings_page(request, member, notice=f"A test event ({reply.event_id}) is on its way to {reply.url}.")


@routes.post(f"{BASE}/settings/credentials")
async def add_credential(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    form = await request.post()
    credential = credentials_pb2.ProviderCredential(
        provider_id=str(form.get("provider_id", "")).strip(), name=str(form.get("name", "")).strip(),
        base_url=str(form.get("base_url", "")).strip(),
    )
    try:
        reply = await request.app[API].client.provider_credentials.create_provider_credential(
            credential=credential, secret=str(form.get("secret", "")), **_auth(request, member)
        )
    except ApiError as exc:
        return await _settings_page(request, member, _status(exc), error=api_error_message(exc))
    return await _settings_page(request, member, 201,
                                notice=f"Credential “{reply.credential.name}” added (…{reply.credential.key_hint}).")


@routes.post(BASE + "/settings/credentials/{credential_id}/disable")
async def disable_credential(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    try:
        await request.app[API].client.provider_credentials.disable_provider_credential(
            credential_id=request.match_info["credential_id"], **_auth(request, member)
        )
    except ApiError as exc:
        return await _settings_page(request, member, _status(exc), error=api_error_message(exc))
    return await _settings_page(request, member, notice="The credential is disabled; Relay no longer uses it.")
