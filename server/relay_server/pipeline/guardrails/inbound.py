"""The input guardrails, run at admission before anything is reserved or routed: limits, deny
and injection patterns, PII (block / redact / flag) and the tenant's classifier.

A refusal is a 400 with a precise code in the door's own error shape (the doors map
``RelayError``); a redaction replaces ``ctx.body`` with a copy the provider sees instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.guardrails.classifier import ClassifierClient
from relay_server.pipeline.guardrails.policy import Compiled
from relay_server.text.pii import replace

POLICY_CODE = "content_policy_violation"
_PART_TYPES = {"text": "text", "input_text": "text", "image_url": "image_url", "input_image": "image_url",
               "input_audio": "input_audio", "file": "file", "input_file": "file"}  # fmt: skip


def refuse(message: str, code: str = POLICY_CODE, param: str | None = None) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, code=code, param=param)


async def check_input(ctx: RequestContext, guard: Compiled, input_tokens: int, classifier: ClassifierClient | None) -> None:
    policy = guard.policy
    body = ctx.body
    if policy.limits.any:
        _limits(ctx, guard, input_tokens)
    texts = list(_texts(body))
    for name, patterns, action in (("deny", guard.deny, policy.deny_action), ("injection", guard.injection, policy.injection)):
        hits = sum(1 for _, text in texts for p in patterns if p.search(text))
        if hits:
            ctx.note_guardrail(name, "input", action, hits)
            if action == "block":
                what = "a denied pattern" if name == "deny" else "a prompt-injection pattern"
                raise refuse(f"The request was refused by a guardrail: its input matches {what}.")
    if policy.pii and policy.pii_input:
        _pii(ctx, guard, texts)
    if policy.classifier is not None and classifier is not None:
        verdict = await classifier.check(policy.classifier, [t for _, t in _texts(ctx.body)], ctx.request_id)
        ctx.note_guardrail("classifier", "input", verdict)
        if verdict == "block":
            raise refuse("The request was refused by the tenant's content classifier.")
        if verdict == "unavailable":
            raise RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, "The tenant's content classifier could not be reached "
                             "and its guardrail fails closed; try again later.", code="guardrail_unavailable")  # fmt: skip


def _limits(ctx: RequestContext, guard: Compiled, input_tokens: int) -> None:
    limits, body = guard.policy.limits, ctx.body
    raw = body.get("messages")
    messages: list[Any] = raw if isinstance(raw, list) else []
    checks = (
        (limits.max_input_tokens, input_tokens, "input_tokens_exceeded", "input tokens", None),
        (limits.max_messages, len(messages), "too_many_messages", "messages", "messages"),
        (limits.max_characters, sum(len(t) for _, t in _texts(body)), "input_characters_exceeded", "characters", None),
        (limits.max_tools, len(body.get("tools") or ()), "too_many_tools", "tools", "tools"),
    )
    for limit, value, code, noun, param in checks:
        if limit is not None and value > limit:
            ctx.note_guardrail(f"input.{code}", "input", "block")
            raise refuse(f"The request has {value} {noun}; this key allows at most {limit}.", code, param)
    allowed = limits.allowed_content_types
    if allowed is not None:
        for i, message in enumerate(messages):
            for part in _parts(message):
                kind = _PART_TYPES.get(str(part.get("type")), str(part.get("type")))
                if kind not in allowed:
                    ctx.note_guardrail("input.content_type_not_allowed", "input", "block")
                    raise refuse(f"Content of type `{kind}` is not allowed for this key (allowed: {', '.join(allowed)}).",
                                 "content_type_not_allowed", f"messages[{i}].content")  # fmt: skip


def _pii(ctx: RequestContext, guard: Compiled, texts: list[tuple[tuple[Any, ...], str]]) -> None:
    actions = guard.policy.pii
    found: Counter[str] = Counter()
    redacted: dict[tuple[Any, ...], str] = {}
    for path, text in texts:
        findings = guard.pii.scan(text)
        if not findings:
            continue
        found.update(f.detector for f in findings)
        if any(actions[f.detector] == "redact" for f in findings):
            redacted[path] = replace(text, findings, keep=lambda d: actions[d] != "redact")
    for detector, n in found.items():
        ctx.note_guardrail(f"pii.{detector}", "input", actions[detector], n)
    blocked = sorted(d for d in found if actions[d] == "block")
    if blocked:
        raise refuse(f"The request was refused by a guardrail: its input contains {', '.join(blocked)} data.")
    if redacted:
        ctx.body = _rewrite(ctx.body, redacted)


def _parts(message: Any) -> list[Mapping[str, Any]]:
    content = message.get("content") if isinstance(message, Mapping) else None
    return [p for p in content if isinstance(p, Mapping)] if isinstance(content, list) else []


def _texts(body: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every piece of text a provider would read, with where it sits in the body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                continue
            content = message.get("content")
            if isinstance(content, str):
                yield ("messages", i, "content"), content
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        yield ("messages", i, "content", j), part["text"]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield ("prompt",), prompt
    elif isinstance(prompt, list):
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                yield ("prompt", i), p


def _rewrite(body: Mapping[str, Any], redacted: Mapping[tuple[Any, ...], str]) -> dict[str, Any]:
    """A copy of ``body`` with the redacted texts in place (the client's original is never mutated)."""
    out = dict(body)
    if "messages" in out:
        out["messages"] = [dict(m) if isinstance(m, Mapping) else m for m in out["messages"]]
    if isinstance(out.get("prompt"), list):
        out["prompt"] = list(out["prompt"])
    for path, text in redacted.items():
        if path[0] == "prompt":
            if len(path) == 1:
                out["prompt"] = text
            else:
                out["prompt"][path[1]] = text
        elif len(path) == 3:
            out["messages"][path[1]]["content"] = text
        else:
            message = out["messages"][path[1]]
            parts = message["content"] = list(message["content"])
            parts[path[3]] = {**parts[path[3]], "text": text}
    return out
