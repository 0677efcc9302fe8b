"""Byte-level checks of the REST surface: SSE framing, headers, and unknown-field passthrough."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_sse_frames_are_exact_and_end_with_done(http) -> None:
    with http.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        raw = b"".join(response.iter_bytes())
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    for frame in frames[:-2]:
        assert frame.startswith(b"data: {")
        chunk = json.loads(frame[len(b"data: "):])
        assert chunk["object"] == "chat.completion.chunk"
    assert b"grpc" not in raw


def test_non_streaming_json_has_no_grpc_headers(http) -> None:
    response = http.post("/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert not any(name.startswith("grpc-") for name in response.headers)
    assert response.json()["object"] == "chat.completion"


def test_unknown_openai_fields_are_accepted(http) -> None:
    response = http.post("/chat/completions", json={**CHAT, "service_tier": "flex", "store": True, "future_field": {"x": [1]}})
    assert response.status_code == 200


def test_stream_options_usage_frame_precedes_done(http) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/chat/completions", json=body) as response:
        frames = [f for f in b"".join(response.iter_bytes()).split(b"\n\n") if f]
    usage_chunk = json.loads(frames[-2][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0


def test_a_20mb_vision_request_under_the_limit_is_accepted(http) -> None:
    image = "data:image/png;base64," + "A" * (20 * 1024 * 1024)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]}]}
    response = http.post("/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 0
