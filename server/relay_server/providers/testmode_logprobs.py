"""Deterministic, well-formed ``logprobs`` for test mode, so clients that read
them (classifiers, confidence scores, token highlighters) can be tested.

Values are a pure function of the answer's seed, the choice, the token's
position and the token: the same request gets the same logprobs, streamed or
not, and asking for them never changes the answer itself (``logprobs`` and
``top_logprobs`` are outside the answer's seed).  The generated token is
always the most likely one; ``top_logprobs`` starts with it, then
alternatives from a fixed vocabulary in decreasing order.  Shapes follow
OpenAI's: chat ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal"}``,
legacy completions ``{tokens, token_logprobs, top_logprobs, text_offset}``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

_ALTERNATIVES = (
    " the", " a", ",", ".", " and", " to", " of", " is", " in", " that", " it", " for", " with", " as", " on",
    " this", " be", " are", " was", " can", "\n", " I", " you", " not", " or", " an", " by", " at", " from", " we",
)


def chat_wanted(body: Mapping[str, Any]) -> int | None:
    """How many top_logprobs a chat request asked for, or None when it asked for no logprobs."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) and 0 <= top <= 20 else 0


def completion_wanted(body: Mapping[str, Any]) -> int | None:
    """Legacy completions: ``logprobs: N`` (0-5) asks for them, with N alternatives per token."""
    top = body.get("logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) and 0 <= top <= 5 else None


def _draw(seed: int, index: int, position: int, token: str) -> tuple[float, list[tuple[str, float]]]:
    rng = random.Random(f"relay-logprobs:{seed}:{index}:{position}:{token}")
    chosen = -round(rng.random() ** 3 * 1.5, 6)
    alternatives = [t for t in rng.sample(_ALTERNATIVES, 21) if t != token][:20]
    values = sorted((round(chosen - rng.uniform(0.05, 8.0), 6) for _ in alternatives), reverse=True)
    return chosen, list(zip(alternatives, values, strict=True))


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_content(seed: int, index: int, tokens: Sequence[str], start: int, top: int) -> list[dict[str, Any]]:
    """Entries of ``logprobs.content`` for ``tokens``, the first at position ``start`` of the choice."""
    out = []
    for k, token in enumerate(tokens):
        chosen, alternatives = _draw(seed, index, start + k, token)
        ranked = [(token, chosen), *alternatives][:top]
        out.append({
            "token": token, "logprob": chosen, "bytes": _bytes(token),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": _bytes(t)} for t, v in ranked],
        })  # fmt: skip
    return out


def chat_logprobs(content: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"content": content, "refusal": None}


def completion_logprobs(
    seed: int, index: int, tokens: Sequence[str], start: int, offset: int, top: int, *, first_is_prompt: bool = False
) -> dict[str, Any]:
    """Legacy ``logprobs`` for ``tokens`` (positions from ``start``, text offsets from ``offset``).

    ``first_is_prompt``: an echoed prompt's first token has no logprob (nothing precedes it).
    """
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for k, token in enumerate(tokens):
        offsets.append(offset)
        offset += len(token)
        if first_is_prompt and k == 0:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        chosen, alternatives = _draw(seed, index, start + k, token)
        token_logprobs.append(chosen)
        top_logprobs.append(dict([(token, chosen), *alternatives][:top]))
    return {"tokens": list(tokens), "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}
