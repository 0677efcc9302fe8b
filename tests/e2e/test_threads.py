"""The Threads REST API through Envoy: create, send (SSE and JSON), resume a
dropped stream, idempotent retries, paging, search and errors."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote

import httpx
import pytest

pytestmark = pytest.mark.e2e

SLOW = {"x-relay-test-latency-ms": "40"}


def _thread(http: httpx.Client, **body: object) -> dict:
    response = http.post("/threads", json={"end_user_id": "user_42", "metadata": {"topic": "support"}, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _send(text: str, **extra: object) -> dict:
    return {"model": "gpt-4o-mini", "content": [{"type": "text", "text": text}], **extra}


def _events(frames: list[bytes]) -> list[dict]:
    return [json.loads(f.split(b"data: ", 1)[1]) for f in frames if f.startswith(b"id: ")]


def _frames(raw: bytes) -> list[bytes]:
    return [f + b"\n\n" for f in raw.split(b"\n\n") if f]


def test_create_and_get_a_thread_idempotently(http: httpx.Client) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/threads", json={"end_user_id": "user_42", "title": "Plans"}, headers=key).json()
    again = http.post("/threads", json={"end_user_id": "user_42", "title": "Plans"}, headers=key).json()
    assert first["object"] == "thread" and first["id"] == again["id"] and first["title"] == "Plans"
    fetched = http.get(f"/threads/{first['id']}").json()
    assert fetched["id"] == first["id"] and fetched["end_user_id"] == "user_42"
    listed = http.get("/threads", params={"end_user_id": "user_42", "limit": 100}).json()
    assert first["id"] in [t["id"] for t in listed["data"]]


def test_send_without_stream_returns_both_messages(http: httpx.Client) -> None:
    thread = _thread(http)
    response = http.post(f"/threads/{thread['id']}/messages", json=_send("What's my plan?"))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    user, reply = body["user_message"], body["assistant_message"]
    assert (user["seq"], reply["seq"]) == (1, 2) and reply["status"] == "complete"
    assert reply["content"][0]["type"] == "text" and reply["output_tokens"] > 0
    assert user["request_id"] == reply["request_id"] == response.headers["x-request-id"]


def test_a_dropped_stream_resumes_byte_for_byte(http: httpx.Client) -> None:
    thread = _thread(http)
    body = _send("Tell me a story", stream=True, max_tokens=60)
    with http.stream("POST", f"/threads/{thread['id']}/messages", json=body, headers=SLOW) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        message_id = response.headers["x-relay-thread-message-id"]
        received = b""
        for piece in response.iter_bytes():
            received += piece
            if received.count(b"\n\n") >= 3:
                break
    # The client is gone; the reply goes on.  Resume after the third event.
    before = _frames(received[: received.rindex(b"\n\n") + 2])[:3]
    assert [f.split(b"\n", 1)[0] for f in before] == [b"id: 1", b"id: 2", b"id: 3"]
    url = f"/threads/{thread['id']}/messages/{message_id}/stream"
    rest = http.get(url, params={"starting_after": 3}).content
    whole = http.get(url, params={"starting_after": 0}).content
    assert b"".join(before) + rest == whole
    assert whole.endswith(b"data: [DONE]\n\n")

    events = _events(_frames(whole))
    assert [e["object"] for e in (events[0], events[-1])] == ["thread.message.created", "thread.message.completed"]
    streamed = "".join(e["delta"].get("content", "") for e in events if e["object"] == "thread.message.delta")
    stored = http.get(f"/threads/{thread['id']}/messages/{message_id}").json()
    assert stored["status"] == "complete" and stored["content"][0]["text"] == streamed


def test_a_retry_with_the_same_idempotency_key_lands_in_the_same_slot(http: httpx.Client) -> None:
    thread = _thread(http)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post(f"/threads/{thread['id']}/messages", json=_send("Once"), headers=key)
    retry = http.post(f"/threads/{thread['id']}/messages", json=_send("Once"), headers=key)
    assert retry.headers["x-relay-idempotent-replay"] == "true"
    assert retry.json()["assistant_message"]["id"] == first.json()["assistant_message"]["id"]
    listed = http.get(f"/threads/{thread['id']}/messages").json()
    assert [m["seq"] for m in listed["data"]] == [1, 2]


def test_history_pages_with_a_cursor_and_a_bad_cursor_is_400(http: httpx.Client) -> None:
    thread = _thread(http)
    for i in range(3):
        http.post(f"/threads/{thread['id']}/messages", json=_send(f"message {i}"))
    seqs, cursor = [], ""
    while True:
        page = http.get(f"/threads/{thread['id']}/messages", params={"limit": 4, "cursor": cursor}).json()
        assert len(page["data"]) <= 4 and page["object"] == "list"
        seqs += [m["seq"] for m in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] == bool(cursor)
        if not cursor:
            break
    assert seqs == [1, 2, 3, 4, 5, 6]
    bad = http.get(f"/threads/{thread['id']}/messages", params={"cursor": "garbage!"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def test_search_reports_its_method(http: httpx.Client) -> None:
    thread = _thread(http)
    prompt = _send(f"Say something about {uuid.uuid4().hex}")
    reply = http.post(f"/threads/{thread['id']}/messages", json=prompt).json()["assistant_message"]
    text = reply["content"][0]["text"]
    for _ in range(100):  # the reply is embedded just after it completes
        # %20, not "+": Envoy's transcoder does not read "+" as a space in query parameters.
        found = http.get(f"/threads:searchMessages?limit=10&query={quote(text)}").json()
        if reply["id"] in [r["message"]["id"] for r in found["data"]]:
            break
        time.sleep(0.02)
    assert found["object"] == "list" and found["method"] == "vector"  # pgvector is there in tests
    hit = next(r for r in found["data"] if r["message"]["id"] == reply["id"])
    assert hit["score"] == pytest.approx(1.0, abs=1e-5) == found["data"][0]["score"]
    assert http.get("/threads:searchMessages?query=%20").status_code == 400


def test_errors_are_openai_shaped(http: httpx.Client, relay) -> None:
    assert http.get("/threads/thr_nope").status_code == 404
    thread = _thread(http)
    bad_block = http.post(f"/threads/{thread['id']}/messages", json={"model": "gpt-4o-mini", "content": [{"type": "video"}]})
    assert bad_block.status_code == 422 and bad_block.json()["error"]["param"] == "content[0]"
    no_key = httpx.post(f"{relay.base_url}/threads", json={})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    deleted = http.delete(f"/threads/{thread['id']}").json()
    assert deleted == {"id": thread["id"], "object": "thread.deleted", "deleted": True}
    assert http.post(f"/threads/{thread['id']}/messages", json=_send("hi")).status_code == 404
