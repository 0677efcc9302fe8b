"""What makes two requests the same for the response cache (pure functions)."""

from __future__ import annotations

import pytest

from relay_server.errors import RelayError
from relay_server.pipeline.steps.cache import request_ttl
from relay_server.pipeline.steps.tenant_flags import DEFAULT_SEMANTIC_THRESHOLD, TenantFlags, parse_flags
from relay_server.text import cache_key as ck

BODY = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}


def key(body: dict, tenant: str = "ten_a", environment: str = "live", kind: str = "chat", model: str = "gpt-4o-mini") -> str:
    return ck.exact_key(tenant, environment, kind, model, body)  # type: ignore[arg-type]


def test_the_key_is_scoped_by_tenant_environment_kind_and_model() -> None:
    base = key(BODY)
    assert len(base) == 64 and base == key(dict(reversed(list(BODY.items()))))
    assert key(BODY, tenant="ten_b") != base
    assert key(BODY, environment="test") != base
    assert key(BODY, kind="completion") != base
    assert key(BODY, model="gpt-4o") != base


@pytest.mark.parametrize("change", [
    {"temperature": 0.5}, {"max_tokens": 10}, {"top_p": 0.9}, {"seed": 1}, {"n": 2}, {"stop": ["x"]},
    {"response_format": {"type": "json_object"}}, {"some_new_parameter": True},
    {"messages": [{"role": "user", "content": "hi!"}]},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
])
def test_every_generation_field_changes_the_key(change: dict) -> None:
    assert key({**BODY, **change}) != key(BODY)


@pytest.mark.parametrize("change", [
    {"stream": True}, {"stream_options": {"include_usage": True}}, {"user": "u"}, {"metadata": {"a": "b"}},
    {"store": True}, {"model": "an-alias"},
])
def test_delivery_fields_do_not(change: dict) -> None:
    assert key({**BODY, **change}) == key(BODY)


def test_integral_floats_equal_ints_as_the_typed_api_sends_them() -> None:
    assert key({**BODY, "temperature": 0.0, "max_tokens": 16.0}) == key({**BODY, "max_tokens": 16})
    assert key({**BODY, "temperature": 0.5}) != key({**BODY, "temperature": 0})


@pytest.mark.parametrize(("body", "deterministic"), [
    (BODY, True),
    ({**BODY, "temperature": 0.7}, False),
    ({k: v for k, v in BODY.items() if k != "temperature"}, False),  # OpenAI's default is 1
    ({**BODY, "temperature": 0.7, "seed": 3}, True),
    ({**BODY, "temperature": 0.7, "seed": True}, False),
    ({**BODY, "temperature": "0"}, False),
    ({**BODY, "tools": [{"type": "function", "function": {"name": "f"}}]}, False),
    ({**BODY, "functions": [{"name": "f"}]}, False),
    ({**BODY, "tools": []}, True),
])
def test_determinism(body: dict, deterministic: bool) -> None:
    assert ck.is_deterministic(body) is deterministic


def test_the_semantic_prompt_is_the_last_user_message() -> None:
    body = {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                         {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]}]}
    assert ck.last_user_text("chat", body) == ("second\npart", 2)
    image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"},
                                                         {"type": "image_url", "image_url": {"url": "u"}}]}]}
    assert ck.last_user_text("chat", image) is None
    assert ck.last_user_text("chat", {"messages": [{"role": "system", "content": "s"}]}) is None
    assert ck.last_user_text("chat", {"messages": "nope"}) is None
    assert ck.last_user_text("completion", {"prompt": "p"}) == ("p", -1)
    assert ck.last_user_text("completion", {"prompt": ["a", "b"]}) is None
    assert ck.last_user_text("completion", {"prompt": "   "}) is None


def test_normalisation_folds_case_width_and_whitespace() -> None:
    assert ck.normalise_prompt("  What IS\tRelay?\n") == "what is relay?"
    assert ck.normalise_prompt("ＲＥＬＡＹ") == "relay"
    assert ck.normalise_prompt("What is Relay?") != ck.normalise_prompt("What is Envoy?")


def test_the_semantic_scope_ignores_only_the_embedded_prompt() -> None:
    def scope(text: str, system: str = "s", **extra: object) -> str:
        body = {"temperature": 0, "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
                **extra}
        return ck.semantic_scope("ten_a", "live", "chat", "gpt-4o-mini", body, 1)

    assert scope("a") == scope("completely different")
    assert scope("a") != scope("a", system="t")
    assert scope("a") != scope("a", max_tokens=3)
    assert ck.semantic_scope("ten_b", "live", "chat", "gpt-4o-mini", {"messages": [{"role": "user", "content": "a"}]}, 0) != \
        ck.semantic_scope("ten_a", "live", "chat", "gpt-4o-mini", {"messages": [{"role": "user", "content": "a"}]}, 0)


@pytest.mark.parametrize(("header", "default", "ttl"), [(None, 0, 0), (None, 60, 60), ("0", 60, 0), ("5", 60, 5), (" 7 ", 0, 7)])
def test_ttl_header_then_tenant_default(header: str | None, default: int, ttl: int) -> None:
    metadata = {} if header is None else {"x-relay-cache-ttl": header}
    assert request_ttl(metadata, TenantFlags(default_cache_ttl_s=default)) == ttl


@pytest.mark.parametrize("header", ["-1", "1e3", "", "ten", str(30 * 86400 + 1)])
def test_a_malformed_ttl_header_is_refused(header: str) -> None:
    with pytest.raises(RelayError) as caught:
        request_ttl({"x-relay-cache-ttl": header}, TenantFlags())
    assert caught.value.http_status == 400


def test_tenant_flags_parse_with_defaults_for_bad_values() -> None:
    flags = parse_flags({"default_cache_ttl_sec": "x", "semantic_cache_threshold": "1.5", "cache_nondeterministic": "maybe"},
                        frozenset({"semantic_cache"}), vector_available=False)
    assert flags.default_cache_ttl_s == 0 and flags.semantic_threshold == DEFAULT_SEMANTIC_THRESHOLD
    assert flags.cache_nondeterministic is False and flags.semantic_cache and not flags.semantic_available
    flags = parse_flags({"default_cache_ttl_sec": "3600", "semantic_cache_threshold": "0.9", "cache_nondeterministic": "on",
                         "thread_embeddings": "false"}, frozenset({"threads"}), vector_available=True)
    assert (flags.default_cache_ttl_s, flags.semantic_threshold, flags.cache_nondeterministic) == (3600, 0.9, True)
    assert flags.threads and not flags.thread_embeddings and not flags.semantic_available
