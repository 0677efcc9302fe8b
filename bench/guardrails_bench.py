"""Guardrails' CPU per request, off and on: what the guardrail step and the stream session's output
filter cost a request, measured in process (no network: the step is pure CPU once the tenant's
config is cached, which is how the request path reads it).

Run: ``PYTHONPATH=server:proto_python:. .venv/bin/python bench/guardrails_bench.py [--requests 5000]``

Each request: the admission step on a ~1 KB chat body, then a 64-chunk streamed answer (one word per
chunk, as the bench's mock upstream sends) through the output filter, then its end.  ``off``: the
tenant has no ``guardrails`` entry (every Relay tenant by default).  ``on``: every PII detector on
input and output (redact), the shipped prompt-injection set, five deny patterns.  Prints one JSON
object: CPU microseconds per request (process time, median of 5 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

from relay_server.domain.request import Principal, RequestContext
from relay_server.pipeline.guardrails.policy import GuardrailSource
from relay_server.pipeline.guardrails.step import Guardrails

POLICY = {
    "pii": dict.fromkeys(("email", "phone", "credit_card", "iban", "national_id", "secret", "ip"), "redact"),
    "injection": "block",
    "deny": {"patterns": [r"(?i)project\s+falcon", r"(?i)\binternal only\b", r"\bACME-\d{6}\b", r"(?i)codename", r"(?i)\bdo not share\b"]},
}
PROMPT = ("Please summarise the following support ticket in two sentences. The customer writes that "
          "their invoice for last month was higher than expected, that they changed plans in the middle of "
          "the month and want to know how proration works. ") * 3
_ANSWER_TEXT = ("The customer asks why last month's invoice was higher than expected after a mid-month plan "
          "change; explain that proration charges the new plan from the day of the change and credits "
          "the unused part of the old plan, and offer to send a detailed breakdown of the charges")
ANSWER = _ANSWER_TEXT.split(" ") * 3

CHUNKS = 64


class Values:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    async def values(self, tenant_id: str) -> Mapping[str, str]:
        return self._values


def chunk(word: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": finish}]}  # fmt: skip


async def one(guardrails: Guardrails, principal: Principal, chunks: list[dict[str, Any]]) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": PROMPT}], "stream": True}  # fmt: skip
    ctx = RequestContext(request_id="req_bench", kind="chat", body=body, principal=principal)
    output = await guardrails.admit(ctx, 120)
    for item in chunks:  # what StreamSession does per item: one None check, or the filter
        if output is not None:
            output.item(item)
    if output is not None:
        output.end()


async def measure(values: Mapping[str, str], requests: int) -> float:
    guardrails = Guardrails(GuardrailSource(Values(values)))
    principal = Principal("ten_bench", "key_bench", "abcd", "live", "inference")
    chunks = [chunk(w) for w in ANSWER[:CHUNKS - 1]] + [chunk(ANSWER[CHUNKS - 1], "stop")]
    await one(guardrails, principal, chunks)  # compile once (as the first request after a config change)
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(requests):
            await one(guardrails, principal, chunks)
        rounds.append((time.process_time() - start) / requests * 1e6)
    return statistics.median(rounds)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    baseline = await measure({"markup_rate": "0.2"}, args.requests)
    on = await measure({"guardrails": json.dumps(POLICY)}, max(1, args.requests // 10))
    print(json.dumps({"off_us_per_request": round(baseline, 2), "on_us_per_request": round(on, 1),
                      "chunks_per_request": CHUNKS, "prompt_chars": len(PROMPT)}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
