"""relay.yaml → the desired state (docs/deployment.md describes the format).

Secrets are never in the file: a credential's ``secret`` is a ``${NAME}``
reference to an environment variable, and the resolved value stays inside a
``Secret`` whose repr hides it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from relay_server.domain.policy import PLANS as PLAN_NAMES
from relay_server.domain.policy import RESOURCES as QUOTA_RESOURCES

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MODEL_FIELDS = {
    "provider": "provider_id", "provider_name": "provider_name", "display_name": "display_name", "kind": "kind",
    "input_cost_per_1m": "input_cost_per_1m", "output_cost_per_1m": "output_cost_per_1m",
    "cache_read_cost_per_1m": "cache_read_cost_per_1m", "cache_write_cost_per_1m": "cache_write_cost_per_1m",
    "context_window": "context_window", "max_output_tokens": "max_output_tokens",
    "embedding_dimensions": "embedding_dimensions", "supports_streaming": "supports_streaming",
    "supports_functions": "supports_functions", "supports_vision": "supports_vision", "status": "status",
    "aliases": "aliases", "routes": "routes",
}  # fmt: skip
PRICES = {"input_cost_per_1m", "output_cost_per_1m", "cache_read_cost_per_1m", "cache_write_cost_per_1m"}
INTS = {"context_window", "max_output_tokens", "embedding_dimensions"}
BOOLS = {"supports_streaming", "supports_functions", "supports_vision"}
_CREDENTIAL_KEYS = {"name", "secret", "base_url", "rpm_limit", "tpm_limit", "priority"}
_ROUTE_KEYS = {"provider", "provider_name", "priority", "status"}
_TENANT_KEYS = {"name", "owner_email", "plan", "metadata", "config", "features"}
# A provider's operator settings, beside its credentials (UpdateProvider's fields).
PROVIDER_SETTINGS = ("name", "base_url", "priority", "region", "status")


class SpecError(ValueError):
    """The file is not a valid relay.yaml; the message names the place (never a secret)."""


class Secret:
    """A resolved secret: compared and sent, never shown."""

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str) -> None:
        self._value, self.reference = value, reference

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference})"

    __str__ = __repr__


@dataclass(frozen=True)
class Credential:
    provider_id: str
    name: str
    secret: Secret
    base_url: str = ""
    rpm_limit: int = 0
    tpm_limit: int = 0
    priority: int = 0


@dataclass(frozen=True)
class Model:
    relay_name: str
    # proto field name → value, only the fields the file gives (the update mask).
    values: dict[str, Any]


@dataclass(frozen=True)
class Tenant:
    slug: str
    name: str | None
    owner_email: str | None
    plan: str | None
    metadata: dict[str, str] | None
    config: dict[str, str]
    features: dict[str, bool]


@dataclass(frozen=True)
class ProviderSettings:
    provider_id: str
    # field name → value, only the fields the file gives (the update mask).
    values: dict[str, Any]


@dataclass(frozen=True)
class PlanSpec:
    name: str
    quotas: dict[str, int | None]  # resource → limit (-1: unlimited; None: no quota)
    features: dict[str, bool]
    allowed_models: list[str] | None = None  # None: not managed; []: every model


@dataclass(frozen=True)
class Desired:
    credentials: list[Credential] = field(default_factory=list)
    models: list[Model] = field(default_factory=list)
    tenants: list[Tenant] = field(default_factory=list)
    providers: list[ProviderSettings] = field(default_factory=list)
    plans: list[PlanSpec] = field(default_factory=list)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A key given twice is an error, not a silent last-wins."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(f"line {key_node.start_mark.line + 1}: `{key}` is given twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: Path, env: Mapping[str, str] | None = None) -> Desired:
    try:
        document = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse(document or {}, os.environ if env is None else env)


def parse(document: Any, env: Mapping[str, str]) -> Desired:
    root = _map(document, "the file")
    _keys(root, {"providers", "models", "tenants", "plans"}, "the file")
    desired = Desired()
    for provider_id, provider in _map(root.get("providers") or {}, "providers").items():
        where = f"providers.{provider_id}"
        _keys(_map(provider, where), {"credentials", *PROVIDER_SETTINGS}, where)
        names: set[str] = set()
        for i, raw in enumerate(_list(provider.get("credentials") or [], f"{where}.credentials")):
            desired.credentials.append(_credential(str(provider_id), raw, f"{where}.credentials[{i}]", env, names))
        settings = _provider_settings(provider, where, env)
        if settings:
            desired.providers.append(ProviderSettings(str(provider_id), settings))
    for name, raw in _map(root.get("plans") or {}, "plans").items():
        desired.plans.append(_plan(str(name), raw, env))
    for relay_name, raw in _map(root.get("models") or {}, "models").items():
        desired.models.append(_model(str(relay_name), raw, env))
    for slug, raw in _map(root.get("tenants") or {}, "tenants").items():
        desired.tenants.append(_tenant(str(slug), raw, env))
    return desired


def _credential(provider_id: str, raw: Any, where: str, env: Mapping[str, str], names: set[str]) -> Credential:
    item = _map(raw, where)
    _keys(item, _CREDENTIAL_KEYS, where)
    name = _text(item.get("name", "default"), f"{where}.name", env)
    if name in names:
        raise SpecError(f"{where}: the credential name `{name}` is given twice for {provider_id}")
    names.add(name)
    secret = item.get("secret")
    if not isinstance(secret, str) or not _REF.fullmatch(secret.strip()):
        raise SpecError(f"{where}.secret must be a ${{ENV_VAR}} reference (secrets never sit in the file)")
    variable = _REF.fullmatch(secret.strip()).group(1)  # type: ignore[union-attr]
    if not env.get(variable):
        raise SpecError(f"{where}.secret: the environment variable {variable} is not set")
    return Credential(
        provider_id, name, Secret(env[variable], f"${{{variable}}}"),
        base_url=_text(item.get("base_url", ""), f"{where}.base_url", env),
        rpm_limit=_int(item.get("rpm_limit", 0), f"{where}.rpm_limit"),
        tpm_limit=_int(item.get("tpm_limit", 0), f"{where}.tpm_limit"),
        priority=_int(item.get("priority", 0), f"{where}.priority"),
    )  # fmt: skip


def _provider_settings(item: dict[Any, Any], where: str, env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in PROVIDER_SETTINGS:
        if key not in item:
            continue
        at = f"{where}.{key}"
        if key == "priority":
            values[key] = _int(item[key], at)
        elif key == "status":
            status = _text(item[key], at, env)
            if status not in ("active", "disabled"):
                raise SpecError(f"{at} must be active or disabled (got {status!r})")
            values[key] = status
        else:
            values[key] = "" if item[key] is None else _text(item[key], at, env)
    return values


def _plan(name: str, raw: Any, env: Mapping[str, str]) -> PlanSpec:
    where = f"plans.{name}"
    if name not in PLAN_NAMES:
        raise SpecError(f"{where}: unknown plan (plans: {', '.join(PLAN_NAMES)})")
    item = _map(raw, where)
    _keys(item, {"quotas", "features", "allowed_models"}, where)
    quotas: dict[str, int | None] = {}
    for resource, limit in _map(item.get("quotas") or {}, f"{where}.quotas").items():
        at = f"{where}.quotas.{resource}"
        if resource not in QUOTA_RESOURCES:
            raise SpecError(f"{at}: unknown quota (quotas: {', '.join(QUOTA_RESOURCES)})")
        if limit is None:
            quotas[resource] = None  # no quota: the plan does not limit it
        elif limit == "unlimited" or (limit == -1 and not isinstance(limit, bool)):
            quotas[resource] = -1
        else:
            quotas[resource] = _int(limit, f"{at} (or unlimited, or null for no quota)")
    features: dict[str, bool] = {}
    for feature, enabled in _map(item.get("features") or {}, f"{where}.features").items():
        if not isinstance(enabled, bool):
            raise SpecError(f"{where}.features.{feature} must be true or false")
        features[str(feature)] = enabled
    models = None
    if "allowed_models" in item:
        at = f"{where}.allowed_models"
        models = sorted({_text(m, at, env) for m in _list(item["allowed_models"] or [], at)})
    return PlanSpec(name, quotas, features, models)


def _model(relay_name: str, raw: Any, env: Mapping[str, str]) -> Model:
    where = f"models.{relay_name}"
    item = _map(raw, where)
    _keys(item, set(MODEL_FIELDS), where)
    values: dict[str, Any] = {}
    for key, value in item.items():
        name, at = MODEL_FIELDS[key], f"{where}.{key}"
        if name in PRICES:
            values[name] = price(value, at)
        elif name in INTS:
            values[name] = _int(value, at)
        elif name in BOOLS:
            if not isinstance(value, bool):
                raise SpecError(f"{at} must be true or false")
            values[name] = value
        elif name == "aliases":
            values[name] = sorted(_text(a, at, env) for a in _list(value, at))
        elif name == "routes":
            values[name] = [_route(r, f"{at}[{i}]", env) for i, r in enumerate(_list(value, at))]
        else:
            values[name] = _text(value, at, env)
    return Model(relay_name, values)


def _route(raw: Any, where: str, env: Mapping[str, str]) -> dict[str, Any]:
    item = _map(raw, where)
    _keys(item, _ROUTE_KEYS, where)
    if "provider" not in item:
        raise SpecError(f"{where}.provider is required")
    return {
        "provider_id": _text(item["provider"], f"{where}.provider", env),
        "provider_name": _text(item.get("provider_name", ""), f"{where}.provider_name", env),
        "priority": _int(item.get("priority", 0), f"{where}.priority"),
        "status": _text(item.get("status", "active"), f"{where}.status", env),
    }


def _tenant(slug: str, raw: Any, env: Mapping[str, str]) -> Tenant:
    where = f"tenants.{slug}"
    item = _map(raw, where)
    _keys(item, _TENANT_KEYS, where)

    def optional(key: str) -> str | None:
        return _text(item[key], f"{where}.{key}", env) if key in item else None

    metadata = None
    if "metadata" in item:
        metadata = {str(k): _text(v, f"{where}.metadata.{k}", env) for k, v in _map(item["metadata"], f"{where}.metadata").items()}
    config = {str(k): _text(v, f"{where}.config.{k}", env) for k, v in _map(item.get("config") or {}, f"{where}.config").items()}
    features: dict[str, bool] = {}
    for feature, enabled in _map(item.get("features") or {}, f"{where}.features").items():
        if not isinstance(enabled, bool):
            raise SpecError(f"{where}.features.{feature} must be true or false")
        features[str(feature)] = enabled
    return Tenant(slug, optional("name"), optional("owner_email"), optional("plan"), metadata, config, features)


def price(value: Any, where: str) -> str:
    """A price as the API takes it: a plain decimal string ('' = none)."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        raise SpecError(f"{where} must be a decimal number of USD per 1M tokens")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SpecError(f"{where} must be a decimal number of USD per 1M tokens") from None
    if not number.is_finite():
        raise SpecError(f"{where} must be a decimal number of USD per 1M tokens")
    return format(number, "f")


def _map(value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{where} must be a list")
    return value


def _keys(item: dict[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{where} must be a whole number ≥ 0")
    return value


def _text(value: Any, where: str, env: Mapping[str, str]) -> str:
    """A scalar as text, with ``${NAME}`` references resolved (a missing variable is an error)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if not isinstance(value, str):
        raise SpecError(f"{where} must be a string")

    def resolve(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise SpecError(f"{where}: the environment variable {match.group(1)} is not set")
        return env[match.group(1)]

    return _REF.sub(resolve, value)
