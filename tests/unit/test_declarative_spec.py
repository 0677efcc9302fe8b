"""relay.yaml parsing (relay_server.declarative.spec): secrets only by ${ENV}, never
shown; unknown keys, duplicate keys and bad values refused with the place named."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay_server.declarative.spec import SpecError, load, parse, price


def test_secret_comes_from_the_environment_and_never_shows() -> None:
    desired = parse({"providers": {"openai": {"credentials": [{"name": "a", "secret": "${OPENAI_KEY}"}]}}},
                    {"OPENAI_KEY": "sk-very-secret-1234"})  # fmt: skip
    [credential] = desired.credentials
    assert credential.secret.reveal() == "sk-very-secret-1234"
    assert "sk-very" not in repr(desired) and "sk-very" not in str(credential.secret)
    assert repr(credential.secret) == "Secret(${OPENAI_KEY})"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"providers": {"openai": {"credentials": [{"secret": "sk-inline"}]}}}, "must be a ${ENV_VAR} reference"),
        ({"providers": {"openai": {"credentials": [{"secret": "${UNSET_VAR}"}]}}}, "UNSET_VAR is not set"),
        ({"providers": {"openai": {"credentials": [{"secret": "${K}"}, {"secret": "${K}"}]}}}, "given twice"),
        ({"models": {"m": {"provider": "openai", "prise": 1}}}, "models.m: unknown key(s) prise"),
        ({"models": {"m": {"input_cost_per_1m": "cheap"}}}, "models.m.input_cost_per_1m must be a decimal"),
        ({"models": {"m": {"context_window": -1}}}, "models.m.context_window must be a whole number"),
        ({"models": {"m": {"supports_vision": "yes"}}}, "models.m.supports_vision must be true or false"),
        ({"models": {"m": {"routes": [{"priority": 1}]}}}, "models.m.routes[0].provider is required"),
        ({"tenants": {"t": {"config": {"webhook_url": "${NOPE}"}}}}, "tenants.t.config.webhook_url: the environment variable NOPE"),
        ({"tenants": {"t": {"features": {"byok": "on"}}}}, "tenants.t.features.byok must be true or false"),
        ({"plan": {}}, "the file: unknown key(s) plan"),
        ({"providers": {"openai": {"weight": 3}}}, "providers.openai: unknown key(s) weight"),
        ({"providers": {"openai": {"status": "down"}}}, "providers.openai.status must be active or disabled"),
        ({"providers": {"openai": {"priority": -1}}}, "providers.openai.priority must be a whole number"),
        ({"providers": {"openai": {"base_url": ["x"]}}}, "providers.openai.base_url must be a string"),
        ({"plans": {"gold": {}}}, "plans.gold: unknown plan"),
        ({"plans": {"free": {"limits": {}}}}, "plans.free: unknown key(s) limits"),
        ({"plans": {"free": {"quotas": {"rph": 5}}}}, "plans.free.quotas.rph: unknown quota"),
        ({"plans": {"free": {"quotas": {"rpm": -5}}}}, "plans.free.quotas.rpm (or unlimited, or null for no quota) must be"),
        ({"plans": {"free": {"quotas": {"rpm": "lots"}}}}, "plans.free.quotas.rpm (or unlimited"),
        ({"plans": {"free": {"features": {"sso": "yes"}}}}, "plans.free.features.sso must be true or false"),
        ({"plans": {"free": {"allowed_models": "gpt-4o"}}}, "plans.free.allowed_models must be a list"),
    ],
)
def test_bad_documents_are_refused_with_the_place(document: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(document, {"K": "sk-k"})
    assert message in str(caught.value)
    assert "sk-inline" not in str(caught.value)


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text("models:\n  m:\n    provider: openai\n  m:\n    provider: anthropic\n")
    with pytest.raises(SpecError, match="line 4: `m` is given twice"):
        load(path, {})


def test_models_keep_only_the_fields_given_normalised() -> None:
    [model] = parse({"models": {"m": {"provider": "openai", "output_cost_per_1m": 0.6, "aliases": ["b", "a"],
                                      "routes": [{"provider": "test"}]}}}, {}).models  # fmt: skip
    assert model.values == {
        "provider_id": "openai", "output_cost_per_1m": "0.6", "aliases": ["a", "b"],
        "routes": [{"provider_id": "test", "provider_name": "", "priority": 0, "status": "active"}],
    }  # fmt: skip


def test_prices_are_plain_decimals() -> None:
    assert [price(v, "p") for v in (0.15, "2.50", 3, "", None, "1E+1")] == ["0.15", "2.50", "3", "", "", "10"]
    for bad in ("NaN", "Infinity", True, "x"):
        with pytest.raises(SpecError):
            price(bad, "p")


def test_tenant_values_become_text_and_env_references_resolve() -> None:
    [tenant] = parse({"tenants": {"t": {"plan": "pro", "config": {"cache_nondeterministic": True, "spend_cap_usd": 25,
                                                                  "webhook_url": "${HOOK}"}}}},
                     {"HOOK": "https://hooks.example/x"}).tenants  # fmt: skip
    assert tenant.config == {"cache_nondeterministic": "true", "spend_cap_usd": "25", "webhook_url": "https://hooks.example/x"}
    assert (tenant.name, tenant.metadata, tenant.plan) == (None, None, "pro")


def test_provider_settings_and_plans_keep_only_what_the_file_gives() -> None:
    desired = parse({
        "providers": {
            "groq": {"priority": 7, "status": "disabled", "base_url": "http://${HOST}/v1", "region": None},
            "openai": {"credentials": [{"secret": "${K}"}]},
        },
        "plans": {"starter": {"quotas": {"rpm": 450, "tpm": "unlimited", "requests_per_day": None}, "features": {"webhooks": False}},
                  "pro": {"quotas": {"rpm": -1}, "allowed_models": ["gpt-4o", "gpt-4o-mini", "gpt-4o"]},
                  "free": {"allowed_models": None}},
    }, {"K": "sk-k", "HOST": "proxy.internal"})  # fmt: skip
    [groq] = desired.providers  # credentials alone are no settings to converge
    assert (groq.provider_id, groq.values) == ("groq", {"priority": 7, "status": "disabled", "base_url": "http://proxy.internal/v1", "region": ""})
    starter, pro, free = desired.plans
    assert (starter.name, starter.quotas, starter.features) == ("starter", {"rpm": 450, "tpm": -1, "requests_per_day": None}, {"webhooks": False})
    assert (pro.quotas, pro.features, pro.allowed_models) == ({"rpm": -1}, {}, ["gpt-4o", "gpt-4o-mini"])
    assert (starter.allowed_models, free.allowed_models) == (None, [])  # absent: not managed; null: every model
