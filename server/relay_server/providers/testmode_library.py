"""What test mode says: the fixed response library and the generators built on it.

Everything here is a pure function of its inputs (a ``random.Random`` seeded by
the caller, or a key for embeddings), so the same request always yields the
same text, JSON, tool arguments and vectors.  Library texts are ASCII so that
cutting them at any token boundary never splits a character.  Changing this
module changes test-mode answers: treat it as public behaviour (clients' CI
snapshots depend on it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import sys
from array import array
from collections.abc import Mapping
from typing import Any

OPENERS: tuple[str, ...] = (
    "Sure! Here is a short answer.",
    "Good question.",
    "Happy to help with that.",
    "Here's a quick overview.",
    "Let me break this down.",
    "Absolutely.",
    "Great, let's take a look.",
    "Here is what I would suggest.",
    "That depends on a few things.",
    "Thanks for the details.",
)

RESPONSES: tuple[str, ...] = (
    "The simplest approach is usually the best place to start. Build the smallest version that works, "
    "measure it, and only then decide where the extra complexity is worth paying for.",
    "Caching works best when the data is read far more often than it is written. Pick a clear expiry "
    "policy up front, because stale data is harder to debug than slow data.",
    "A good commit message explains why a change was made, not only what changed. The diff already "
    "shows the what; future readers need the reasoning.",
    "## Summary\n\n- The request was processed successfully.\n- No errors were reported.\n"
    "- All three steps completed in the expected order.",
    "Here is a minimal example in Python:\n\n```python\ndef greet(name: str) -> str:\n"
    "    return f\"Hello, {name}!\"\n\nprint(greet(\"world\"))\n```\n\nRunning it prints `Hello, world!`.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It happens mostly in "
    "the leaves, inside small structures called chloroplasts.",
    "Rate limits protect a shared service from bursts of traffic. When you hit one, wait for the time "
    "given in the `Retry-After` header and try again with exponential backoff.",
    "The capital of France is **Paris**. It has been the country's political and cultural center for "
    "most of its history.",
    "To reset your password, open the account settings, choose **Security**, and follow the link sent "
    "to your email address. The link expires after 30 minutes.",
    "| Plan | Requests per minute | Monthly tokens |\n|------|--------------------:|---------------:|\n"
    "| Free | 20 | 100,000 |\n| Pro | 500 | 10,000,000 |",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes the air pressure is lower, so "
    "it boils at a lower temperature and food takes longer to cook.",
    "There are three common ways to solve this:\n\n1. Retry the request after a short delay.\n"
    "2. Reduce the size of the input.\n3. Split the work into smaller batches.",
    "A binary search finds an item in a sorted list by repeatedly halving the range it looks at. It "
    "needs about log2(n) comparisons, so a million items take roughly twenty steps.",
    "Unit tests check one small piece of behaviour in isolation. Integration tests check that the "
    "pieces work together, which is where most surprising bugs tend to hide.",
    "The meeting has been moved to Thursday at 3 PM. Please bring the latest figures so we can review "
    "the quarterly numbers together.",
    "> Make it work, make it right, make it fast.\n\nThat order matters: optimizing code that is not "
    "yet correct usually wastes time.",
    "An API key should be treated like a password. Store it in a secret manager, never commit it to a "
    "repository, and rotate it as soon as you suspect it has leaked.",
    "Yes, that is correct. The function returns `None` when the list is empty, so check for that case "
    "before using the result.",
    "The weather tomorrow looks mild, with a high of 21 degrees and a light breeze from the west. Rain "
    "is unlikely until the evening.",
    "Indexes speed up reads at the cost of slower writes and extra storage. Add them for the queries "
    "you actually run, and check the query plan to confirm they are used.",
    "### Next steps\n\n- [x] Create the project\n- [ ] Add the first endpoint\n- [ ] Write the tests\n"
    "- [ ] Deploy to staging",
    "In short: use a queue when the producer and the consumer run at different speeds. The queue absorbs "
    "bursts so neither side has to wait for the other.",
    "The error means the server could not parse the request body. Check that the JSON is valid and that "
    "the `Content-Type` header is set to `application/json`.",
    "A haiku about autumn:\n\n*Red leaves drift and fall*\n*the cold river carries them*\n*far past the old mill*",
    "Streaming responses send the answer in small pieces as soon as they are ready. The total time is "
    "about the same, but the first words arrive much sooner.",
    "You can convert the timestamp with `datetime.fromtimestamp(ts, tz=timezone.utc)`. Always keep the "
    "time zone explicit to avoid off-by-one-hour bugs around daylight saving changes.",
    "I don't have access to real-time data, but I can explain how to find it. Most providers publish "
    "their status and pricing on a public page.",
    "The total comes to $42.50: two items at $15.00 each plus $12.50 for shipping.",
    "Good names make code easier to read than comments do. A function called `parse_invoice_date` "
    "needs no explanation; one called `process` needs a paragraph.",
    "Backups are only as good as your last successful restore. Test the restore process regularly, "
    "ideally on a schedule, and write down the steps.",
)

CLOSERS: tuple[str, ...] = (
    "Let me know if you'd like more detail.",
    "I hope this helps!",
    "Feel free to ask a follow-up question.",
    "Would you like an example?",
    "Happy to go deeper on any of these points.",
    "Good luck!",
)

_WORDS: tuple[str, ...] = (
    "alpha", "amber", "atlas", "beacon", "cedar", "comet", "delta", "ember", "falcon", "harbor",
    "indigo", "juniper", "lumen", "maple", "nova", "orbit", "pebble", "quartz", "river", "summit",
)
_CITIES: tuple[str, ...] = ("Paris", "Tokyo", "Boston, MA", "Berlin", "Lisbon", "Toronto", "Nairobi", "Sydney")
_MAX_DEPTH = 8


def compose_text(rng: random.Random) -> str:
    """An answer of one to three library paragraphs, sometimes framed by an opener and a closer."""
    parts: list[str] = []
    if rng.random() < 0.5:
        parts.append(rng.choice(OPENERS))
    parts.extend(rng.sample(RESPONSES, rng.choice((1, 1, 2, 2, 3))))
    if rng.random() < 0.4:
        parts.append(rng.choice(CLOSERS))
    return "\n\n".join(parts)


def chat_text(response_format: Any, rng: random.Random) -> str:
    """A chat answer: JSON when ``response_format`` asks for it, else library prose."""
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        return json_object_text(rng)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return json_schema_text(schema if isinstance(schema, Mapping) else {"type": "object"}, rng)
    return compose_text(rng)


def json_object_text(rng: random.Random) -> str:
    """A small JSON object for ``response_format: json_object`` (compact, valid)."""
    sentence = rng.choice(RESPONSES).split("\n")[0].split(". ")[0].rstrip(".") + "."
    value = {
        "answer": sentence,
        "confidence": round(rng.uniform(0.5, 0.99), 2),
        "tags": rng.sample(_WORDS, 2),
    }
    return _dumps(value)


def json_schema_text(schema: Any, rng: random.Random) -> str:
    """A JSON document that conforms to ``schema`` (the common subset of JSON Schema)."""
    return _dumps(value_for_schema(schema, rng))


def tool_arguments(parameters: Any, rng: random.Random) -> str:
    """``function.arguments``: a JSON object built from the function's parameter schema."""
    value = value_for_schema(parameters, rng) if isinstance(parameters, Mapping) else {}
    return _dumps(value if isinstance(value, dict) else {})


def value_for_schema(schema: Any, rng: random.Random, name: str = "", root: Any = None, depth: int = 0) -> Any:
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return _string_for(name, {}, rng)
    if isinstance(schema.get("$ref"), str):
        return value_for_schema(_resolve_ref(root, schema["$ref"]), rng, name, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for combiner in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combiner)
        if isinstance(options, list) and options:
            preferred = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return value_for_schema((preferred or options)[0], rng, name, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return {}
        return {str(k): value_for_schema(v, rng, str(k), root, depth + 1) for k, v in props.items()}
    if kind == "array":
        low = _int(schema.get("minItems"), 1)
        high = max(low, _int(schema.get("maxItems"), max(low, 3)))
        count = rng.randint(low, min(high, low + 2))
        return [value_for_schema(schema.get("items"), rng, name, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = _int(schema.get("minimum"), 0)
        high = max(low, _int(schema.get("maximum"), low + 100))
        return rng.randint(low, high)
    if kind == "number":
        low_f = _num(schema.get("minimum"), 0.0)
        high_f = max(low_f, _num(schema.get("maximum"), low_f + 100.0))
        return round(rng.uniform(low_f, high_f), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string_for(name, schema, rng)


def _string_for(name: str, schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt, key = schema.get("format"), name.lower()
    if fmt == "date-time":
        value = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    elif fmt == "date" or key.endswith("date"):
        value = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "email" or "email" in key:
        value = f"{rng.choice(_WORDS)}@example.com"
    elif fmt in ("uri", "url") or key.endswith("url"):
        value = f"https://example.com/{rng.choice(_WORDS)}"
    elif fmt == "uuid":
        value = "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}".format(*(rng.getrandbits(b) for b in (32, 16, 12, 12, 48)))
    elif key in ("location", "city", "place", "destination"):
        value = rng.choice(_CITIES)
    else:
        value = " ".join(rng.sample(_WORDS, 2))
    min_len = _int(schema.get("minLength"), 0)
    max_len = _int(schema.get("maxLength"), 0)
    if len(value) < min_len:
        value += "x" * (min_len - len(value))
    if max_len and len(value) > max_len:
        value = value[:max_len]
    return value


def is_token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    )


def input_items(value: Any, allow_empty: bool) -> list[str | list[int]] | None:
    """The items of a ``prompt`` / embeddings ``input`` (str, list[str], token array(s)); None if malformed."""
    if (isinstance(value, str) and (value or allow_empty)) or is_token_array(value):
        return [value]
    if isinstance(value, list) and value and (
        all(isinstance(v, str) and (v or allow_empty) for v in value) or all(is_token_array(v) for v in value)
    ):
        return list(value)
    return None


def embeddings(items: list[str | list[int]], model: str, dims: int, encoding_format: str) -> list[dict[str, Any]]:
    """OpenAI's ``data`` list: one vector per item, keyed by model and item only, so the
    same text maps to the same vector in every request."""
    data = []
    for index, item in enumerate(items):
        text = item if isinstance(item, str) else json.dumps(item)
        vector = unit_vector(f"{model}\x00{text}".encode("utf-8", "surrogatepass"), dims)
        data.append({"object": "embedding", "index": index, "embedding": encode_vector(vector, encoding_format)})
    return data


def unit_vector(key: bytes, dims: int) -> array:
    """A deterministic unit-length float32 vector of ``dims`` components for ``key``.

    SHAKE-256 expands the key to 4 bytes per component in one C call (about
    0.1 ms for 1536 dims, where per-component ``random.gauss`` costs ~10x
    more).  The stream for fewer dimensions is a prefix of the stream for more,
    so a shortened vector is the renormalised prefix of the full one, as with
    OpenAI's ``dimensions`` parameter.
    """
    raw = struct.unpack(f"<{dims}i", hashlib.shake_256(key).digest(4 * dims))
    norm = math.hypot(*raw) or 1.0
    return array("f", [x / norm for x in raw])


def encode_vector(vector: array, encoding_format: str) -> list[float] | str:
    """OpenAI's ``embedding`` value: floats, or base64 of little-endian float32 bytes."""
    if encoding_format == "base64":
        if sys.byteorder != "little":
            vector = array("f", vector)
            vector.byteswap()
        return base64.b64encode(vector.tobytes()).decode("ascii")
    # 9 significant digits round-trip a float32 exactly, so both formats decode to the same vector.
    return [float(f"{x:.9g}") for x in vector]


def _resolve_ref(root: Any, ref: str) -> Any:
    """Local JSON pointers only (``#/$defs/Name``); anything else becomes a string schema."""
    if not ref.startswith("#"):
        return {}
    node = root
    for segment in ref[1:].split("/"):
        if not segment:
            continue
        if not isinstance(node, Mapping):
            return {}
        node = node.get(segment.replace("~1", "/").replace("~0", "~"), {})
    return node


def _int(value: Any, default: int) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2**53:
        return int(value)
    return default


def _num(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300:
        return float(value)
    return default


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
