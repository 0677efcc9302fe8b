"""Token estimates and the reconciliation of provider usage with them.

Provider usage is authoritative.  Relay estimates locally (``text/tokens.py``:
tiktoken offline for OpenAI models, a per-family factor over cl100k for the
others) for three purposes:

* before dispatch: input tokens for the TPM check and the spend reservation,
  and the worst-case output (``max_tokens``, else the model's maximum);
* when the provider reports no usage (a provider without
  ``stream_options.include_usage``, or a client that went away before the
  usage chunk): input from the request, output from the deltas actually
  relayed — that is what the provider generated and billed;
* as a guard: when the provider's count exceeds the estimate far beyond the
  estimate's error (× ``ratio`` + ``slack`` tokens), the tenant is billed the
  lower number and the discrepancy is logged.  Reasoning tokens are never seen
  as deltas, so they are taken from the provider's report and not compared.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import RequestKind, Usage
from relay_server.text import tokens

log = logging.getLogger(__name__)

_MAX_CHOICES = 128
_LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_PLAIN_DELTA = frozenset(("content", "role"))


def estimate_input_tokens(kind: RequestKind, body: Mapping[str, Any], model: str) -> int:
    """Input tokens of a request as the provider will count them (an estimate for non-OpenAI models)."""
    if kind == "chat":
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        return tokens.count_chat_prompt(body.get("messages") or [], model, tools)
    if kind == "completion":
        return tokens.count_prompt(body.get("prompt"), model)
    return tokens.count_embedding_input(body.get("input"), model)


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value) if value >= 0 else None


def worst_case_output_tokens(kind: RequestKind, body: Mapping[str, Any], entry: CatalogEntry, input_tokens: int) -> int:
    """The most output a request can produce: what a spend reservation must cover."""
    if kind == "embedding":
        return 0
    choices = min(max(_whole(body.get("n")) or 1, 1), _MAX_CHOICES)
    if kind == "completion":
        choices = max(choices, min(_whole(body.get("best_of")) or 1, _MAX_CHOICES))
    requested = _whole(body.get("max_completion_tokens"))
    if requested is None:
        requested = _whole(body.get("max_tokens"))
    if requested is None and kind == "completion":
        requested = _LEGACY_DEFAULT_MAX_TOKENS
    ceiling = entry.max_output_tokens or max(0, entry.context_window - input_tokens)
    per_choice = ceiling if requested is None else min(requested, ceiling)
    return per_choice * choices


@dataclass(slots=True)
class _ChoiceText:
    text: list[str] = field(default_factory=list)
    tools: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)
    """Tool call index → (name fragments, argument fragments)."""

    def tool(self, index: Any) -> tuple[list[str], list[str]]:
        key = index if isinstance(index, int) and not isinstance(index, bool) else len(self.tools)
        return self.tools.setdefault(key, ([], []))


class OutputCounter:
    """Accumulates what the provider generated, per choice, from deltas or a whole response."""

    __slots__ = ("_choices", "reasoning_tokens")

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceText] = {}
        self.reasoning_tokens = 0

    def _choice(self, index: Any) -> _ChoiceText:
        key = index if isinstance(index, int) and not isinstance(index, bool) else 0
        return self._choices.setdefault(key, _ChoiceText())

    def add_chunk(self, chunk: Mapping[str, Any]) -> None:
        choices = chunk.get("choices")
        if type(choices) is list and len(choices) == 1:
            # Nearly every streamed chunk: one choice whose delta is plain content (and the role).
            # Exact types and a key-set test keep the per-chunk cost off the general walk below.
            choice = choices[0]
            if type(choice) is dict and "text" not in choice:
                delta = choice.get("delta")
                if type(delta) is dict and delta.keys() <= _PLAIN_DELTA:
                    slot = self._choice(choice.get("index"))
                    content = delta.get("content")
                    if type(content) is str:
                        slot.text.append(content)
                    return
        for choice in choices or ():
            if not isinstance(choice, Mapping):
                continue
            slot = self._choice(choice.get("index"))
            if isinstance(choice.get("text"), str):  # legacy completions
                slot.text.append(choice["text"])
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                self._add_message(slot, delta)

    def add_response(self, body: Mapping[str, Any]) -> None:
        for choice in body.get("choices") or ():
            if not isinstance(choice, Mapping):
                continue
            slot = self._choice(choice.get("index"))
            if isinstance(choice.get("text"), str):
                slot.text.append(choice["text"])
            message = choice.get("message")
            if isinstance(message, Mapping):
                self._add_message(slot, message)

    def add_text(self, text: str) -> None:
        """Output given as plain text (a native-dialect event the translator already read)."""
        self._choice(0).text.append(text)

    def note_reported(self, raw_usage: Mapping[str, Any] | None) -> None:
        details = raw_usage.get("completion_tokens_details") if isinstance(raw_usage, Mapping) else None
        if isinstance(details, Mapping):
            self.reasoning_tokens = _whole(details.get("reasoning_tokens")) or 0

    @staticmethod
    def _add_message(slot: _ChoiceText, message: Mapping[str, Any]) -> None:
        for name in ("content", "refusal"):
            if isinstance(message.get(name), str):
                slot.text.append(message[name])
        calls = message.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else ()):
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                _add_function(slot.tool(call.get("index", position)), function)
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping):
            _add_function(slot.tool(-1), legacy)

    @property
    def chars(self) -> int:
        return sum(
            sum(map(len, c.text)) + sum(len(p) for parts in c.tools.values() for part in parts for p in part)
            for c in self._choices.values()
        )

    @property
    def empty(self) -> bool:
        return not any(c.text or c.tools for c in self._choices.values())

    def tokens(self, model: str) -> int:
        """Tokens of the generated text, each piece counted whole (a delta may end mid-token)."""
        total = 0
        for slot in self._choices.values():
            if slot.text:
                total += tokens.count_text("".join(slot.text), model)
            for names, arguments in slot.tools.values():
                total += tokens.count_text("".join(names), model) + tokens.count_text("".join(arguments), model)
        return total


def _add_function(slot: tuple[list[str], list[str]], function: Mapping[str, Any]) -> None:
    if isinstance(function.get("name"), str):
        slot[0].append(function["name"])
    if isinstance(function.get("arguments"), str):
        slot[1].append(function["arguments"])


@dataclass(frozen=True, slots=True)
class Reconciled:
    usage: Usage
    source: str  # provider | estimate | provider_capped


def output_count_needed(reported: Usage | None, *, reasoning_tokens: int = 0, slack: int = 512) -> bool:
    """Whether ``reconcile`` will read the local output count.

    Counting the relayed text is a full tokenizer pass over the answer, so it runs only when its
    result can matter: the provider reported nothing, or its visible output exceeds ``slack`` (at
    or below it, no estimate can trigger the guard: the bound is ``estimate × ratio + slack``).
    """
    if reported is None:
        return True
    completion = reported.completion_tokens
    return completion - min(reasoning_tokens, completion) > slack


def reconcile(
    reported: Usage | None,
    estimated_input: int,
    estimated_output: int,
    *,
    reasoning_tokens: int = 0,
    ratio: float = 1.5,
    slack: int = 512,
) -> Reconciled:
    """The usage to bill: the provider's, the estimate when it gave none, the lower one on a gross discrepancy."""
    if reported is None:
        return Reconciled(Usage(estimated_input, estimated_output), "estimate")
    prompt, completion = reported.prompt_tokens, reported.completion_tokens
    source = "provider"
    if prompt > math.ceil(estimated_input * ratio) + slack:
        prompt, source = estimated_input, "provider_capped"
    visible = completion - min(reasoning_tokens, completion)
    if visible > math.ceil(estimated_output * ratio) + slack:
        completion, source = estimated_output + min(reasoning_tokens, completion), "provider_capped"
    if source == "provider":
        return Reconciled(reported, source)
    log.warning(
        "provider usage far above the local count; billing the lower",
        extra={
            "reported_input": reported.prompt_tokens,
            "reported_output": reported.completion_tokens,
            "estimated_input": estimated_input,
            "estimated_output": estimated_output,
        },
    )
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_read_tokens=min(reported.cache_read_tokens, prompt),
        cache_write_tokens=min(reported.cache_write_tokens, prompt),
    )
    return Reconciled(usage, source)
