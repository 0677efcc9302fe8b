"""Test mode answers logprobs (chat `logprobs`/`top_logprobs`, legacy `logprobs=N`)
deterministically and in OpenAI's shapes, read through the official openai SDK."""

from __future__ import annotations

import math

import pytest
from openai import OpenAI

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Tell me something about logprobs"}]


def test_chat_logprobs_are_well_formed_deterministic_and_match_the_stream(client: OpenAI) -> None:
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=12)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=12, logprobs=True, top_logprobs=3)
    assert plain.choices[0].logprobs is None
    choice = reply.choices[0]
    assert choice.message.content == plain.choices[0].message.content  # asking for logprobs changes no answer
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for entry in content:
        assert entry.logprob <= 0 and bytes(entry.bytes) == entry.token.encode()
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and len({t.token for t in entry.top_logprobs}) == 3
    again = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=12, logprobs=True, top_logprobs=3)
    assert again.choices[0].logprobs == choice.logprobs
    streamed = [
        entry
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=HI, max_tokens=12, logprobs=True, top_logprobs=3, stream=True
        )
        for c in chunk.choices
        if c.logprobs is not None and c.logprobs.content
        for entry in c.logprobs.content
    ]
    assert streamed == content
    bare = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=4, logprobs=True)
    assert all(e.top_logprobs == [] for e in bare.choices[0].logprobs.content)


def test_legacy_completion_logprobs(client: OpenAI) -> None:
    reply = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this", max_tokens=8, logprobs=2)
    logprobs = reply.choices[0].logprobs
    text = reply.choices[0].text
    assert "".join(logprobs.tokens) == text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs) == len(logprobs.text_offset)
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert value <= 0 and len(top) == 2 and math.isclose(top[token], value)
    echoed = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this", max_tokens=8, logprobs=2, echo=True)
    e = echoed.choices[0].logprobs
    assert "".join(e.tokens) == echoed.choices[0].text and e.token_logprobs[0] is None  # the prompt's first token
    streamed = [
        c.logprobs
        for chunk in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this", max_tokens=8, logprobs=2, stream=True)
        for c in chunk.choices
        if c.logprobs is not None
    ]
    assert [t for lp in streamed for t in lp.tokens] == logprobs.tokens
    assert [o for lp in streamed for o in lp.text_offset] == logprobs.text_offset
    assert client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this", max_tokens=8).choices[0].logprobs is None
