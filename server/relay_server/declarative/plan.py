"""Compare the desired state with what the admin API reports; list and apply the changes.

Every read and write goes through the admin gRPC API with the platform token,
so changes are validated, audited and broadcast to every worker as usual.
What a change prints never includes a secret: a credential's secret is
compared by the four-character hint the server keeps (``key_hint``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc

from relay_proto.relay.admin.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    plans_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
)
from relay_server.declarative.plan_platform import plan_changes, provider_changes
from relay_server.declarative.spec import PRICES, Credential, Desired, Model, Tenant
from relay_server.errors import RelayError
from relay_server.tenancy.config_values import validate_entry

_PROVISIONING = tenants_pb2.TENANT_STATUS_PROVISIONING
_DELETED = tenants_pb2.TENANT_STATUS_DELETED


@dataclass
class Change:
    """One thing ``apply`` will do: ``+`` create, ``~`` update; ``lines`` say what differs."""

    sign: str
    subject: str
    lines: list[str] = field(default_factory=list)
    run: Callable[[], object] = lambda: None

    def render(self) -> str:
        return "\n".join([f"{self.sign} {self.subject}", *(f"    {line}" for line in self.lines)])


class Admin:
    """The admin services on one channel, every call with the operator token and a deadline."""

    def __init__(self, channel: grpc.Channel, token: str, *, timeout: float = 30.0) -> None:
        self.catalog = catalog_pb2_grpc.ModelCatalogServiceStub(channel)
        self.credentials = credentials_pb2_grpc.ProviderCredentialServiceStub(channel)
        self.tenants = tenants_pb2_grpc.TenantServiceStub(channel)
        self.plans = plans_pb2_grpc.PlanServiceStub(channel)
        self._kw: dict[str, Any] = {"metadata": (("authorization", f"Bearer {token}"),), "timeout": timeout}

    def __call__(self, method: Callable[..., Any], request: Any) -> Any:
        return method(request, **self._kw)

    def pages(self, method: Callable[..., Any], request: Any, items: str) -> Iterator[Any]:
        while True:
            response = self(method, request)
            yield from getattr(response, items)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token


def plan(admin: Admin, desired: Desired, *, wait_timeout: float = 60.0) -> list[Change]:
    """The changes that make the server match ``desired``, in the order they must run."""
    providers = {p.id: p for p in admin(admin.catalog.ListProviders, catalog_pb2.ListProvidersRequest()).providers}
    for provider_id in [c.provider_id for c in desired.credentials] + [p.provider_id for p in desired.providers]:
        if provider_id not in providers:
            raise ValueError(f"providers.{provider_id}: no such provider (known: {', '.join(sorted(providers))})")
    changes: list[Change] = provider_changes(admin, desired.providers, providers, Change)
    pooled = [c for c in admin.pages(admin.credentials.ListProviderCredentials,
                                     credentials_pb2.ListProviderCredentialsRequest(page_size=100), "credentials")
              if c.status != "disabled"]  # fmt: skip
    changes += [c for want in desired.credentials if (c := _credential(admin, want, pooled))]
    models = {m.relay_name: m for m in admin.pages(admin.catalog.ListCatalogModels,
                                                   catalog_pb2.ListCatalogModelsRequest(page_size=100), "models")}  # fmt: skip
    changes += [c for want in desired.models if (c := _model(admin, want, models.get(want.relay_name)))]
    changes += plan_changes(admin, desired.plans, {m.relay_name: m.id for m in models.values()}, Change)
    tenants = {t.slug: t for t in admin.pages(admin.tenants.ListTenants, tenants_pb2.ListTenantsRequest(page_size=100), "tenants")
               if t.status != _DELETED}  # fmt: skip
    for want in desired.tenants:
        changes += _tenant(admin, want, tenants.get(want.slug), wait_timeout)
    return changes


# --- provider credentials (Relay's pooled keys) --------------------------------------


def _credential(admin: Admin, want: Credential, pooled: list[Any]) -> Change | None:
    subject = f"credential {want.provider_id}/{want.name}"
    spec = credentials_pb2.ProviderCredential(provider_id=want.provider_id, name=want.name, base_url=want.base_url,
                                              rpm_limit=want.rpm_limit, tpm_limit=want.tpm_limit, priority=want.priority)  # fmt: skip

    def create() -> Any:
        request = credentials_pb2.CreateProviderCredentialRequest(credential=spec, secret=want.secret.reveal())
        return admin(admin.credentials.CreateProviderCredential, request).credential

    current = next((c for c in pooled if c.provider_id == want.provider_id and c.name == want.name), None)
    if current is None:
        return Change("+", subject, [f"secret from {want.secret.reference}"], create)
    differs = [f"{name}: {getattr(current, name)!r} -> {getattr(spec, name)!r}"
               for name in ("base_url", "rpm_limit", "tpm_limit", "priority") if getattr(current, name) != getattr(spec, name)]  # fmt: skip
    if differs:
        # No RPC changes these in place: a new credential takes over, then the old one is disabled.
        def replace() -> None:
            create()
            admin(admin.credentials.DisableProviderCredential,
                  credentials_pb2.DisableProviderCredentialRequest(credential_id=current.id))  # fmt: skip

        return Change("~", subject, [*differs, f"replaces {current.id} (new secret from {want.secret.reference})"], replace)
    if current.key_hint != want.secret.reveal()[-4:]:
        request = credentials_pb2.RotateProviderCredentialRequest(credential_id=current.id, secret=want.secret.reveal())
        return Change("~", subject, [f"secret rotated (from {want.secret.reference})"],
                      lambda: admin(admin.credentials.RotateProviderCredential, request))  # fmt: skip
    return None


# --- catalog models (prices, aliases, routes) ----------------------------------------


def _model(admin: Admin, want: Model, current: Any) -> Change | None:
    message = catalog_pb2.CatalogModel(relay_name=want.relay_name)
    for name, value in want.values.items():
        if name == "routes":
            message.routes.extend(catalog_pb2.ModelRoute(**r) for r in value)
        elif name == "aliases":
            message.aliases.extend(value)
        else:
            setattr(message, name, value)
    if current is None:
        request = catalog_pb2.UpsertCatalogModelRequest(model=message)
        lines = [f"{name}: {_show(value)}" for name, value in sorted(want.values.items())]
        return Change("+", f"model {want.relay_name}", lines, lambda: admin(admin.catalog.UpsertCatalogModel, request))
    differs = sorted(name for name, value in want.values.items() if not _same_model_field(name, value, current, want))
    if not differs:
        return None
    request = catalog_pb2.UpsertCatalogModelRequest(model=message)
    request.update_mask.paths.extend(differs)
    lines = [f"{name}: {_show(_current_field(name, current))} -> {_show(want.values[name])}" for name in differs]
    return Change("~", f"model {want.relay_name}", lines, lambda: admin(admin.catalog.UpsertCatalogModel, request))


def _current_field(name: str, current: Any) -> Any:
    if name == "aliases":
        return sorted(current.aliases)
    if name == "routes":
        return [{"provider_id": r.provider_id, "provider_name": r.provider_name, "priority": r.priority, "status": r.status}
                for r in current.routes]  # fmt: skip
    return getattr(current, name)


def _same_model_field(name: str, value: Any, current: Any, want: Model) -> bool:
    have = _current_field(name, current)
    if name in PRICES:
        return (Decimal(have) if have else None) == (Decimal(value) if value else None)
    if name == "routes":
        # The server fills a route's provider_name with the model's own; compare as it will store them.
        own = want.values.get("provider_name") or current.provider_name or want.relay_name
        wanted = [{**r, "provider_name": r["provider_name"] or own} for r in value]
        key = lambda r: (r["provider_id"], r["provider_name"])  # noqa: E731
        return sorted(wanted, key=key) == sorted(have, key=key)
    return bool(have == value)


def _show(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "[" + ", ".join(f"{r['provider_id']}:{r['provider_name'] or '-'} p{r['priority']} {r['status']}" for r in value) + "]"
    return repr(value)


# --- tenants (plan, name, metadata, config, feature overrides) -----------------------


def _tenant(admin: Admin, want: Tenant, current: Any, wait_timeout: float) -> list[Change]:
    subject = f"tenant {want.slug}"
    if current is None:
        if not want.name or not want.owner_email:
            raise ValueError(f"tenants.{want.slug}: name and owner_email are required to create the tenant")
        for key, value in want.config.items():
            _normalised(want.slug, key, value)  # a bad value is reported by diff, before anything is created
        lines = [f"plan: {want.plan or '(default)'}", *(f"config.{k}: {v!r}" for k, v in sorted(want.config.items())),
                 *(f"features.{k}: {v}" for k, v in sorted(want.features.items()))]  # fmt: skip

        def create() -> None:
            request = tenants_pb2.CreateTenantRequest(slug=want.slug, name=want.name, owner_email=want.owner_email,
                                                      plan=want.plan or "", metadata=want.metadata or {})  # fmt: skip
            # The first key's secret is not shown: keys are minted with `relay keys create`.
            tenant_id = admin(admin.tenants.CreateTenant, request).tenant.id
            _wait_provisioned(admin, tenant_id, wait_timeout)
            _set_config(admin, tenant_id, want.config)
            for feature, enabled in want.features.items():
                _set_feature(admin, tenant_id, feature, enabled)

        return [Change("+", subject, lines, create)]
    changes = []
    fields = {"name": want.name, "plan": want.plan}
    mask = [name for name, value in fields.items() if value is not None and getattr(current, name) != value]
    if want.metadata is not None and dict(current.metadata) != want.metadata:
        mask.append("metadata")
    if mask:
        update = tenants_pb2.Tenant(id=current.id, name=want.name or "", plan=want.plan or "", metadata=want.metadata or {})
        request = tenants_pb2.UpdateTenantRequest(tenant=update)
        request.update_mask.paths.extend(mask)
        lines = [f"{name}: {_show(_plain(getattr(current, name)))} -> {_show(_plain(getattr(update, name)))}" for name in mask]
        changes.append(Change("~", subject, lines, lambda: admin(admin.tenants.UpdateTenant, request)))
    config = dict(admin(admin.tenants.GetTenantConfig, tenants_pb2.GetTenantConfigRequest(tenant_id=current.id)).config)
    # An empty value removes an entry (UpdateTenantConfig's own rule); others compare as the server stores them.
    wanted = {k: _normalised(want.slug, k, v) for k, v in want.config.items()}
    changed = {k: want.config[k] for k, v in wanted.items() if config.get(k, "") != v}
    if changed:
        lines = [f"config.{k}: {config.get(k, '(unset)')!r} -> {v or '(unset)'!r}" for k, v in sorted(changed.items())]
        changes.append(Change("~", subject, lines, lambda: _set_config(admin, current.id, changed)))
    features = {f.feature: f.enabled for f in
                admin(admin.tenants.ListTenantFeatures, tenants_pb2.ListTenantFeaturesRequest(tenant_id=current.id)).features}  # fmt: skip
    flips = {k: v for k, v in want.features.items() if features.get(k) != v}
    if flips:
        lines = [f"features.{k}: {features.get(k, '(unknown)')} -> {v}" for k, v in sorted(flips.items())]

        def override() -> None:
            for feature, enabled in flips.items():
                _set_feature(admin, current.id, feature, enabled)

        changes.append(Change("~", subject, lines, override))
    return changes


def _normalised(slug: str, key: str, value: str) -> str:
    """The value as the server will store it (the server's own validator, without its catalog check)."""
    if not value:
        return ""
    try:
        return validate_entry(key, value)
    except RelayError as exc:
        raise ValueError(f"tenants.{slug}.config.{key}: {exc}") from None


def _plain(value: Any) -> Any:
    return dict(value) if hasattr(value, "items") else value


def _set_config(admin: Admin, tenant_id: str, config: dict[str, str]) -> None:
    if config:
        admin(admin.tenants.UpdateTenantConfig, tenants_pb2.UpdateTenantConfigRequest(tenant_id=tenant_id, config=config))


def _set_feature(admin: Admin, tenant_id: str, feature: str, enabled: bool) -> None:
    request = tenants_pb2.SetFeatureOverrideRequest(tenant_id=tenant_id, feature=feature, enabled=enabled, reason="relay apply")
    admin(admin.tenants.SetFeatureOverride, request)


def _wait_provisioned(admin: Admin, tenant_id: str, timeout_s: float) -> None:
    """Config and feature overrides follow once provisioning has finished (bounded)."""
    deadline = time.monotonic() + timeout_s
    while admin(admin.tenants.GetTenant, tenants_pb2.GetTenantRequest(tenant_id=tenant_id)).tenant.status == _PROVISIONING:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"tenant {tenant_id} still provisioning after {timeout_s:g} s")
        time.sleep(0.2)
