"""OpenAI-wire translators (OpenAI, Mistral, Groq, generic) and the SSE parser: pure, no I/O."""

from __future__ import annotations

import copy
import email.utils
import time
from typing import Any

import orjson
import pytest

from relay_server.domain.provider import Credential, ProviderCall, Usage
from relay_server.errors import ErrorKind
from relay_server.providers.groq import GroqTranslator
from relay_server.providers.mistral import MistralTranslator
from relay_server.providers.openai_compat import GenericOpenAICompatible, OpenAICompatTranslator
from relay_server.providers.registry import PROVIDER_APIS, build_provider
from relay_server.providers.sse import SSEEvent, SSEParser
from relay_server.providers.translator import ProviderFailure

KEY = "sk-secret-0123456789"


def make_call(body: dict[str, Any], kind: str = "chat", base_url: str = "") -> ProviderCall:
    return ProviderCall(
        kind=kind,  # type: ignore[arg-type]
        body=body,
        provider_model="gpt-4o-2024-08-06",
        request_id="req_1",
        credential=Credential("cred_1", KEY, base_url),
    )


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi", "name": "alice"}],
        "stream": True,
        "stream_options": {"include_usage": False, "future_option": 1},
        "some_new_openai_field": {"nested": [1, 2]},
        **extra,
    }


def feed_all(state: Any, datas: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for data in datas:
        out.extend(state.feed(SSEEvent("message", data)))
    return out


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return orjson.dumps(body).decode()


USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}

# -- requests -------------------------------------------------------------------


@pytest.mark.parametrize("translator", [OpenAICompatTranslator(), MistralTranslator(), GroqTranslator()])
@pytest.mark.parametrize("stream", [True, False])
def test_request_never_mutates_the_call_body(translator: Any, stream: bool) -> None:
    body = chat_body(seed=7, max_completion_tokens=10)
    call = make_call(body)
    before = copy.deepcopy(body)
    translator.request(call, stream=stream)
    translator.request(call, stream=stream)  # a retry reuses the same call
    assert body == before


def test_openai_stream_request_forwards_body_and_forces_usage() -> None:
    req = OpenAICompatTranslator().request(make_call(chat_body()), stream=True)
    assert req.method == "POST"
    assert req.url == "https://api.openai.com/v1/chat/completions"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    body = req.json_body
    assert body is not None
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["stream"] is True
    # The client's own stream options are kept; include_usage is forced on.
    assert body["stream_options"] == {"include_usage": True, "future_option": 1}
    assert body["some_new_openai_field"] == {"nested": [1, 2]}
    assert body["messages"][0]["name"] == "alice"


def test_openai_non_stream_request_drops_stream_fields() -> None:
    req = OpenAICompatTranslator().request(make_call(chat_body()), stream=False)
    assert req.json_body is not None
    assert "stream" not in req.json_body and "stream_options" not in req.json_body


def test_credential_never_appears_in_request_repr() -> None:
    req = OpenAICompatTranslator().request(make_call(chat_body()), stream=False)
    assert KEY not in repr(req)
    assert KEY not in repr(make_call(chat_body()))


@pytest.mark.parametrize(
    ("kind", "path"),
    [("chat", "/chat/completions"), ("completion", "/completions"), ("embedding", "/embeddings")],
)
def test_paths_and_credential_base_url(kind: str, path: str) -> None:
    call = make_call({"model": "x", "input": "hi", "prompt": "hi"}, kind=kind, base_url="http://10.0.0.5:8000/v1/")
    req = OpenAICompatTranslator().request(call, stream=False)
    assert req.url == "http://10.0.0.5:8000/v1" + path


def test_embedding_body_keeps_encoding_format() -> None:
    body = {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 4}
    req = OpenAICompatTranslator().request(make_call(body, kind="embedding"), stream=False)
    assert req.json_body == {**body, "model": "gpt-4o-2024-08-06"}


def test_generic_without_any_base_url_fails_retryably() -> None:
    call = ProviderCall("chat", chat_body(), "llama3", "r", Credential("c", ""))
    with pytest.raises(ProviderFailure) as info:
        GenericOpenAICompatible().request(call, stream=True)
    assert info.value.retryable and info.value.kind is ErrorKind.PROVIDER_ERROR


def test_generic_without_key_sends_no_authorization() -> None:
    call = ProviderCall("chat", chat_body(), "llama3", "r", Credential("c", "", "http://127.0.0.1:11434/v1"))
    req = GenericOpenAICompatible().request(call, stream=False)
    assert "Authorization" not in req.headers


def test_mistral_request_differences() -> None:
    body = chat_body(seed=42, max_completion_tokens=64, user="u1", safe_prompt=True)
    req = MistralTranslator().request(make_call(body), stream=True)
    sent = req.json_body
    assert sent is not None
    assert req.url == "https://api.mistral.ai/v1/chat/completions"
    assert "stream_options" not in sent and "user" not in sent and "seed" not in sent
    assert sent["random_seed"] == 42
    assert sent["max_tokens"] == 64 and "max_completion_tokens" not in sent
    assert sent["safe_prompt"] is True  # Mistral's own fields pass through


@pytest.mark.parametrize("field", ["logprobs", "top_logprobs", "logit_bias"])
def test_mistral_refuses_answer_changing_fields(field: str) -> None:
    body = chat_body(**{field: {"1": 2} if field == "logit_bias" else 2})
    with pytest.raises(ProviderFailure) as info:
        MistralTranslator().request(make_call(body), stream=False)
    assert info.value.kind is ErrorKind.INVALID_REQUEST and info.value.param == field
    assert not info.value.retryable


def test_mistral_has_no_legacy_completions() -> None:
    with pytest.raises(ProviderFailure) as info:
        MistralTranslator().request(make_call({"prompt": "x"}, kind="completion"), stream=False)
    assert info.value.kind is ErrorKind.INVALID_REQUEST


def test_groq_drops_message_names_without_touching_input() -> None:
    body = chat_body()
    req = GroqTranslator().request(make_call(body), stream=True)
    assert req.json_body is not None
    assert "name" not in req.json_body["messages"][0]
    assert body["messages"][0]["name"] == "alice"
    assert req.json_body["stream_options"]["include_usage"] is True


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"logit_bias": {"1": 1}}, "logit_bias")],
)
def test_groq_refuses_unsupported_fields(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ProviderFailure) as info:
        GroqTranslator().request(make_call(chat_body(**extra)), stream=False)
    assert info.value.param == param and info.value.http_status == 422


def test_groq_accepts_n_equal_one_and_logprobs_false() -> None:
    GroqTranslator().request(make_call(chat_body(n=1, logprobs=False)), stream=False)


@pytest.mark.parametrize("kind", ["completion", "embedding"])
def test_groq_refuses_non_chat(kind: str) -> None:
    with pytest.raises(ProviderFailure):
        GroqTranslator().request(make_call({"input": "x"}, kind=kind), stream=False)


# -- streams ----------------------------------------------------------------------


def test_openai_stream_passes_chunks_and_usage_chunk_through() -> None:
    state = OpenAICompatTranslator().stream_events(make_call(chat_body()))
    usage_chunk = orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}).decode()
    out = feed_all(state, [chunk("Hel", usage=None), chunk("lo", usage=None), chunk(finish="stop"), usage_chunk])
    assert [c["choices"][0]["delta"].get("content") for c in out[:2]] == ["Hel", "lo"]
    assert out[-1] == {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
    assert not state.done
    assert state.feed(SSEEvent("message", "[DONE]")) == []
    assert state.done
    assert state.finish() == []


def test_usage_on_a_content_chunk_becomes_a_final_usage_chunk() -> None:
    state = MistralTranslator().stream_events(make_call(chat_body()))
    out = feed_all(state, [chunk("Hi"), chunk("!", finish="stop", usage=USAGE), "[DONE]"])
    assert len(out) == 3
    assert "usage" not in out[1] and out[1]["choices"][0]["finish_reason"] == "stop"
    assert out[2]["choices"] == [] and out[2]["usage"] == USAGE
    assert out[2]["id"] == "c1" and out[2]["model"] == "m"
    assert Usage.from_openai(out[-1]["usage"]) == Usage(5, 7)


def test_groq_usage_in_x_groq_is_extracted_and_hidden() -> None:
    state = GroqTranslator().stream_events(make_call(chat_body()))
    last = chunk(finish="stop", x_groq={"id": "req_x", "usage": USAGE})
    out = feed_all(state, [chunk("Hi", x_groq={"id": "req_x"}), last, "[DONE]"])
    assert all("x_groq" not in c for c in out)
    assert out[-1] == {**out[-1], "choices": [], "usage": USAGE}


def test_groq_non_stream_response_hides_x_groq() -> None:
    body = {"id": "x", "choices": [], "usage": USAGE, "x_groq": {"id": "req"}}
    assert "x_groq" not in GroqTranslator().response(200, body, make_call(chat_body()))


def test_stream_without_done_marker_is_truncation() -> None:
    state = OpenAICompatTranslator().stream_events(make_call(chat_body()))
    feed_all(state, [chunk("Hi"), chunk(finish="stop")])
    with pytest.raises(ProviderFailure) as info:
        state.finish()
    assert info.value.kind is ErrorKind.PROVIDER_ERROR and info.value.retryable


def test_generic_accepts_eof_after_finish_but_not_before() -> None:
    finished = GenericOpenAICompatible().stream_events(make_call(chat_body()))
    feed_all(finished, [chunk("Hi"), chunk(finish="stop", usage=USAGE)])
    tail = finished.finish()
    assert tail[0]["usage"] == USAGE and finished.done

    cut = GenericOpenAICompatible().stream_events(make_call(chat_body()))
    feed_all(cut, [chunk("Hi")])
    with pytest.raises(ProviderFailure):
        cut.finish()


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", '"text"'])
def test_malformed_chunk_raises(data: str) -> None:
    state = OpenAICompatTranslator().stream_events(make_call(chat_body()))
    with pytest.raises(ProviderFailure) as info:
        state.feed(SSEEvent("message", data))
    assert info.value.kind is ErrorKind.PROVIDER_ERROR


def test_in_band_error_raises() -> None:
    state = OpenAICompatTranslator().stream_events(make_call(chat_body()))
    feed_all(state, [chunk("Hi")])
    with pytest.raises(ProviderFailure) as info:
        state.feed(SSEEvent("message", '{"error": {"message": "boom", "type": "server_error"}}'))
    assert info.value.upstream_message == "boom"


# -- errors -----------------------------------------------------------------------


def error_body(message: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": param}})


def test_400_is_returned_as_is() -> None:
    body = error_body("max_tokens is too large", "invalid_value", "max_tokens")
    err = OpenAICompatTranslator().error(400, body, {})
    assert (err.kind, err.http_status, err.code, err.param) == (ErrorKind.BAD_REQUEST, 400, "invalid_value", "max_tokens")
    assert err.message == "max_tokens is too large"
    assert not err.retryable and not err.switch_key and err.upstream_status == 400


def test_provider_401_is_our_credential_not_the_tenants() -> None:
    body = error_body("Incorrect API key provided: sk-sec***6789.", "invalid_api_key")
    err = OpenAICompatTranslator().error(401, body, {})
    assert err.kind is ErrorKind.PROVIDER_ERROR and err.http_status == 502
    assert err.code != "invalid_api_key"
    assert "6789" not in err.message and "6789" not in orjson.dumps(err.body()).decode()
    assert err.retryable  # another key may work
    assert err.upstream_message and "6789" in err.upstream_message  # kept for logs only


def test_429_switches_key_and_carries_retry_after() -> None:
    err = OpenAICompatTranslator().error(429, error_body("Rate limit reached for org-abc"), {"Retry-After": "7"})
    assert err.kind is ErrorKind.RATE_LIMIT_EXCEEDED and err.switch_key and err.retryable
    assert err.retry_after_s == 7
    assert "org-abc" not in err.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 2),
        ({"retry-after": "0.2"}, 1),
        ({"retry-after": "+30s as an HTTP date"}, 30),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], expected: int | None) -> None:
    if headers.get("retry-after", "").startswith("+30s"):
        # Built here, not at collection time: the date must be 30 s after *now*.
        headers = {"retry-after": email.utils.formatdate(time.time() + 30, usegmt=True)}
    err = OpenAICompatTranslator().error(429, b"", headers)
    if expected is None or expected < 5:
        assert err.retry_after_s == expected
    else:
        assert err.retry_after_s is not None and expected - 2 <= err.retry_after_s <= expected + 1


@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_5xx_is_a_retryable_provider_error(status: int) -> None:
    err = OpenAICompatTranslator().error(status, b"<html>Bad Gateway</html>", {})
    assert err.kind is ErrorKind.PROVIDER_ERROR and err.http_status == 502 and err.retryable
    assert err.upstream_status == status


def test_mistral_structured_422_message_is_kept() -> None:
    body = orjson.dumps({"object": "error", "message": {"detail": [{"msg": "Extra inputs are not permitted"}]}})
    err = MistralTranslator().error(422, body, {})
    assert err.http_status == 422 and "Extra inputs are not permitted" in err.message


def test_error_with_non_json_body() -> None:
    err = OpenAICompatTranslator().error(404, b"404 page not found", {})
    assert err.http_status == 404 and err.message == "404 page not found"


# -- SSE parser -------------------------------------------------------------------


def parse_in_pieces(raw: bytes, size: int) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for i in range(0, len(raw), size):
        events.extend(parser.feed(raw[i : i + size]))
    return events


RAW = (
    b": keep-alive comment\n\n"
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b"data: line one\r\ndata:line two\r\n\r\n"
    b"data: caf\xc3\xa9\rdata: ok\r\r"
    b"id: 5\nretry: 100\ndata: [DONE]\n\n"
    b"data: never terminated"
)
EXPECTED = [
    SSEEvent("message_start", '{"a": 1}'),
    SSEEvent("message", "line one\nline two"),
    SSEEvent("message", "caf\u00e9\nok"),
    SSEEvent("message", "[DONE]"),
]


# Line feeds only (what providers send): the parser's fast path, same rules.
RAW_LF = (
    b": keep-alive comment\n\n"
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b"data: line one\ndata:line two\ndata:  two spaces\n\n"
    b"data: caf\xc3\xa9\n\n"
    b"\n\n"
    b"id: 5\nretry: 100\ndata: [DONE]\n\n"
    b"data: never terminated"
)
EXPECTED_LF = [
    SSEEvent("message_start", '{"a": 1}'),
    SSEEvent("message", "line one\nline two\n two spaces"),
    SSEEvent("message", "caf\u00e9"),
    SSEEvent("message", "[DONE]"),
]


@pytest.mark.parametrize("raw, expected", [(RAW, EXPECTED), (RAW_LF, EXPECTED_LF)], ids=["any line endings", "line feeds"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_sse_parser_any_chunking(raw: bytes, expected: list[SSEEvent], size: int) -> None:
    assert parse_in_pieces(raw, size) == expected


def test_sse_parser_switches_line_endings_mid_stream() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b") == [SSEEvent("message", "a")]
    assert parser.feed(b"\r\n\r\ndata: c\n") == [SSEEvent("message", "b")]
    assert parser.feed(b"\n") == [SSEEvent("message", "c")]


def test_sse_event_name_resets_between_events() -> None:
    events = SSEParser().feed(b"event: ping\ndata: {}\n\ndata: x\n\n")
    assert [e.event for e in events] == ["ping", "message"]


# -- registry ---------------------------------------------------------------------


def test_registry_rejects_unknown_api() -> None:
    with pytest.raises(ValueError, match="unknown provider api"):
        build_provider("cohere", name="x", client=None)


@pytest.mark.parametrize("api", [a for a in PROVIDER_APIS if a != "test"])
def test_registry_http_apis_need_a_client(api: str) -> None:
    with pytest.raises(ValueError, match="HttpClient"):
        build_provider(api, name=api, client=None)


def test_registry_builds_every_api() -> None:
    from relay_server.providers.http_client import HttpClient
    from relay_server.providers.http_provider import HttpProvider

    client = HttpClient.__new__(HttpClient)  # never used for I/O here
    for api in PROVIDER_APIS:
        provider = build_provider(api, name=f"p-{api}", client=client, base_url="http://127.0.0.1:9/v1")
        if api == "test":
            assert type(provider).__name__ == "TestModeProvider"
        else:
            assert isinstance(provider, HttpProvider) and provider.name == f"p-{api}"
            assert provider.translator.base_url == "http://127.0.0.1:9/v1"
