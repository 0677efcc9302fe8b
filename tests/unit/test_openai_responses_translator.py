"""The (Responses door × OpenAI) native pair: endpoint, body, usage, events re-emitted as received."""

from __future__ import annotations

import orjson
import pytest

from relay_server.domain.provider import Credential, ProviderCall, Usage
from relay_server.providers.openai_responses import OpenAIResponsesTranslator
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import ProviderFailure

CALL = ProviderCall("chat", {"model": "gpt", "messages": []}, "gpt-4o-mini-2024", "req_1",
                    credential=Credential("cred_1", "sk-x", "http://up/v1"), door="responses",
                    native_body={"model": "gpt", "input": [{"role": "user", "content": "Hi"}], "store": False, "new_field": 1})


def _event(kind: str, **data: object) -> SSEEvent:
    return SSEEvent(kind, orjson.dumps({"type": kind, **data}).decode())


def test_request_goes_to_the_responses_endpoint_with_the_native_body() -> None:
    request = OpenAIResponsesTranslator().request(CALL, stream=True)
    assert request.url == "http://up/v1/responses" and request.headers["Authorization"] == "Bearer sk-x"
    body = dict(request.json_body or {})
    assert body["model"] == "gpt-4o-mini-2024" and body["stream"] is True and body["new_field"] == 1 and body["store"] is False
    assert CALL.native_body is not None and "stream" not in CALL.native_body, "the call is never mutated"


def test_a_stream_is_re_emitted_byte_for_byte_with_usage_merged() -> None:
    state = OpenAIResponsesTranslator().stream_events(CALL)
    created = _event("response.created", sequence_number=0, response={"id": "resp_up"})
    [first] = state.feed(created)
    assert first.data == f"event: response.created\ndata: {created.data}\n\n".encode() and not first.output
    [delta] = state.feed(_event("response.output_text.delta", sequence_number=1, item_id="msg_up", delta="Hi"))
    assert delta.text == "Hi" and delta.output
    usage = {"input_tokens": 7, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 3}}
    [done] = state.feed(_event("response.completed", sequence_number=2, response={"id": "resp_up", "usage": usage}))
    assert state.done and done.usage == Usage(7, 2, cache_read_tokens=3)


def test_an_error_before_any_output_is_a_failure_the_router_can_retry() -> None:
    state = OpenAIResponsesTranslator().stream_events(CALL)
    with pytest.raises(ProviderFailure) as caught:
        state.feed(_event("error", code="server_error", message="boom"))
    assert caught.value.retryable


def test_a_cut_stream_raises() -> None:
    state = OpenAIResponsesTranslator().stream_events(CALL)
    state.feed(_event("response.created", sequence_number=0, response={"id": "resp_up"}))
    with pytest.raises(ProviderFailure):
        state.finish()


def test_a_whole_response_keeps_its_bytes_and_reports_usage() -> None:
    body = {"object": "response", "id": "resp_up", "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}],
            "usage": {"input_tokens": 4, "output_tokens": 1}}
    answer = OpenAIResponsesTranslator().response(200, body, CALL)
    assert orjson.loads(answer.data) == body and answer.usage == Usage(4, 1) and answer.text == "Hi"
