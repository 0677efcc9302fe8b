"""Generated input against the whole REST surface: never a 5xx, always an OpenAI-shaped error.

* schemathesis reads the OpenAPI document Envoy serves and generates valid and
  invalid requests (paths, queries, bodies) for every operation, sent with an
  operator token (admin routes) or a test key (inference routes);
* hypothesis builds chat-completion bodies, from plausible to hostile
  (wrong types, NUL and odd Unicode, huge numbers, unknown fields).

Both are bounded (a fixed number of examples, no shrinking) so ``make test``
stays fast; a failure prints the request that caused it.  The stack is this
module's own (own database, a master key so credential routes run for real):
generated tenants and credentials must not leak into other tests.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from relay_server.stack.redis import RedisHandle
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INFERENCE_PREFIXES = ("/v1/chat", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/threads")
# A deeper hunt: RELAY_FUZZ_SCALE=20 RELAY_FUZZ_RANDOM=1 pytest tests/e2e/test_fuzz.py
SCALE = int(os.environ.get("RELAY_FUZZ_SCALE", "1"))
EXAMPLES_PER_MODE = 6 * SCALE  # per operation and mode (valid / invalid): ~45 operations × 2 × 6 calls
CHAT_EXAMPLES = 120 * SCALE
BUDGET_S = 90.0 * SCALE  # a hard stop for each test, whatever the machine's speed

# Derandomised by default: `make test` runs the same examples every time.
_FAST = dict(deadline=None, database=None, derandomize=not os.environ.get("RELAY_FUZZ_RANDOM"),
             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    master = base64.b64encode(secrets.token_bytes(32)).decode()
    stack = start_stack(db, Path(tmp_path_factory.mktemp("relay-fuzz")), redis_url=redis_server.url,
                        extra_env={"RELAY_MASTER_KEY": master, "RELAY_HEALTH_MONITOR": "false"})  # fmt: skip
    yield stack
    stack.stop()
    pg_cluster.drop_database(db)


def _root(stack: RelayStack) -> str:
    return f"http://127.0.0.1:{stack.http_port}"


def _headers(response: Any) -> dict[str, str]:
    # httpx: str values; schemathesis: lists of values.
    return {k.lower(): v[0] if isinstance(v, list) else v for k, v in response.headers.items()}


def _anthropic_route(what: str) -> bool:
    path = what.split(" ", 2)[1] if what.count(" ") >= 1 else what
    return path.startswith(("/v1/messages", "/v1/anthropic/"))


def assert_well_formed(response: Any, what: str) -> None:
    """No 5xx (every declared route is implemented); errors in the door's
    shape: Anthropic's (``{"type": "error", "error": {type, message}}``) on the Anthropic door, else OpenAI's."""
    status = response.status_code
    headers = _headers(response)
    assert status < 500, f"{what} -> {status}: {response.text[:500]}"
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), f"{what} -> {status} {response.text[:300]}"
        payload = json.loads(response.content)
        error = payload["error"]
        if payload.get("type") == "error":  # the Anthropic door
            assert _anthropic_route(what) and {"message", "type"} <= set(error), f"{what} -> {payload}"
        else:
            assert {"message", "type", "param", "code"} <= set(error), f"{what} -> {error}"
        assert isinstance(error["message"], str) and error["message"], f"{what} -> {error}"
        for internal in ("Traceback", "<class ", "_pb2", "DecodeError"):
            # An echo of the request's own text is not a leak (generated values can spell these too).
            assert internal not in error["message"] or internal in what, f"{what} -> {error}"
    # x-relay-overhead-ms and x-relay-cache are documented answers; the error trailers are not.
    leaked = [h for h in headers if h.startswith("grpc-") or h in ("x-relay-error", "x-relay-http-status")]
    assert not leaked, f"{what} -> headers {leaked}"


def test_schemathesis_finds_no_5xx_on_any_operation(fuzz_stack: RelayStack) -> None:
    root = _root(fuzz_stack)
    document = httpx.get(root + "/v1/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    operations = [r.ok() for r in results if type(r).__name__ == "Ok"]
    # Path templates with a dotted field ({tenant.id}) are beyond schemathesis; all others run.
    dotted = sum(
        1 for path, item in document["paths"].items() if re.search(r"\{[^}]*\.[^}]*\}", path)
        for method in item if method in ("get", "put", "post", "patch", "delete")
    )  # fmt: skip
    assert len(operations) >= 40 and len(results) - len(operations) <= dotted
    started = time.monotonic()
    calls = 0
    with requests.Session() as session:
        for operation in operations:
            token = fuzz_stack.test_key if operation.path.startswith(INFERENCE_PREFIXES) else fuzz_stack.admin_token
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if time.monotonic() - started > BUDGET_S:
                    break

                @settings(max_examples=EXAMPLES_PER_MODE, **_FAST)
                @given(operation.as_strategy(generation_mode=mode))
                def call(case: schemathesis.Case) -> None:
                    nonlocal calls
                    calls += 1
                    headers = {**(case.headers or {}), "authorization": f"Bearer {token}"}  # noqa: B023 (called at once, in this iteration)
                    response = case.call(base_url=root, session=session, headers=headers, timeout=30)
                    what = f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:200]}"
                    assert_well_formed(response, what)

                try:
                    call()
                except Exception as exc:  # hypothesis gives up on schemas it cannot satisfy (GET /v1/openapi.json)
                    if type(exc).__name__ != "Unsatisfiable":
                        raise
    assert calls >= 200


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | _TEXT
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=8)  # fmt: skip
_MODELS = st.sampled_from(["gpt-4o-mini", "claude-3-5-haiku", "text-embedding-3-small", ""]) | _TEXT
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]) | _TEXT},
    optional={"content": _TEXT | _JSON, "name": _TEXT, "tool_call_id": _TEXT, "tool_calls": _JSON},
)
_CHAT = st.fixed_dictionaries(
    {"model": _MODELS | _JSON, "messages": st.lists(_MESSAGE, max_size=3) | _JSON},
    optional={
        "stream": st.booleans() | _JSON, "temperature": _JSON, "top_p": _JSON, "n": _JSON, "max_tokens": _JSON,
        "max_completion_tokens": _JSON, "stop": _JSON, "seed": _JSON, "user": _TEXT | _JSON, "tools": _JSON,
        "tool_choice": _JSON, "response_format": _JSON, "stream_options": _JSON, "logit_bias": _JSON,
        "presence_penalty": _JSON, "frequency_penalty": _JSON, "logprobs": _JSON, "top_logprobs": _JSON,
        "metadata": _JSON, "some_future_parameter": _JSON,
    },
)  # fmt: skip
_HEADERS = st.fixed_dictionaries({}, optional={
    "x-relay-metadata": _TEXT | _JSON.map(json.dumps), "x-relay-cache-ttl": _TEXT,
    "x-relay-fallback-models": _TEXT, "idempotency-key": _TEXT.filter(str.isascii),
})  # fmt: skip


def test_hypothesis_chat_bodies_never_get_a_5xx(fuzz_stack: RelayStack) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=_root(fuzz_stack), timeout=30,
                      headers={"authorization": f"Bearer {fuzz_stack.test_key}"}) as http:  # fmt: skip

        @settings(max_examples=CHAT_EXAMPLES, **_FAST)
        @given(body=_CHAT | _JSON, headers=_HEADERS)
        def post(body: Any, headers: dict[str, str]) -> None:
            if time.monotonic() - started > BUDGET_S:
                return
            # HTTP/1.1 field values cannot begin or end with whitespace: the client refuses to send them.
            safe_headers = {k: v for k, v in headers.items() if v.isprintable() and v.isascii() and v == v.strip()}
            response = http.post("/v1/chat/completions", content=json.dumps(body).encode(), headers=safe_headers)
            assert_well_formed(response, f"POST /v1/chat/completions {json.dumps(body)[:300]} {safe_headers}")
            if response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream"):
                assert response.text.endswith("data: [DONE]\n\n") or '"error"' in response.text

        post()


# --- native gRPC: every method, messages filled with extreme values -------------------------

_STRINGS = ["", "x" * 100_000, "é" * 3000, "-1", "9" * 40, "../../etc", "%", "'; DROP TABLE x;--", "\u202e", "key_" + "z" * 300]
_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
_FLOATS = [0.0, -1.0, 1e300, 3.5]


def _fill(message: Any, rng: Any, depth: int = 0) -> None:
    """Set a random subset of fields (recursively) to extreme but encodable values."""
    from google.protobuf.descriptor import FieldDescriptor as F

    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3 or (field.type == F.TYPE_MESSAGE and (depth > 3 or field.message_type.GetOptions().map_entry)):
            continue
        if field.type == F.TYPE_MESSAGE:
            if field.is_repeated:
                for _ in range(rng.randint(0, 2)):
                    _fill(getattr(message, field.name).add(), rng, depth + 1)
            else:
                _fill(getattr(message, field.name), rng, depth + 1)
                getattr(message, field.name).SetInParent()
            continue
        if field.type == F.TYPE_STRING:
            value: Any = rng.choice(_STRINGS)
        elif field.type == F.TYPE_BYTES:
            value = b"\x00\xff" * rng.randint(0, 5)
        elif field.type == F.TYPE_BOOL:
            value = rng.random() < 0.5
        elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            value = rng.choice(_FLOATS)
        elif field.type == F.TYPE_ENUM:
            value = rng.choice([v.number for v in field.enum_type.values] + [999])
        else:
            bits = 64 if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64) else 32
            value = rng.choice(_INTS)
            if field.type in (F.TYPE_UINT32, F.TYPE_FIXED32, F.TYPE_UINT64, F.TYPE_FIXED64):
                value = abs(value) % 2**bits
            else:
                value = max(min(value, 2 ** (bits - 1) - 1), -(2 ** (bits - 1)))
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


def test_extreme_values_on_every_grpc_method_are_never_internal(fuzz_stack: RelayStack) -> None:
    import random

    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    import relay_proto.relay.admin.v1 as admin_protos
    import relay_proto.relay.v1 as data_protos

    for package in (admin_protos, data_protos):  # register every message type in the default pool
        for module in __import__("pkgutil").iter_modules(package.__path__):
            __import__(f"{package.__name__}.{module.name}")
    pool = descriptor_pool.Default()
    files = descriptor_pb2.FileDescriptorSet.FromString((Path(__file__).resolve().parents[2] / "envoy" / "relay.pb").read_bytes())
    rng = random.Random(14)
    failures: dict[str, str] = {}
    calls = 0
    with grpc.insecure_channel(fuzz_stack.grpc_addr) as channel:
        for file in (f for f in files.file if f.package.startswith("relay.")):
            token = fuzz_stack.test_key if file.package == "relay.v1" else fuzz_stack.admin_token
            metadata = (("authorization", f"Bearer {token}"),)
            for service in file.service:
                for method in service.method:
                    path = f"/{file.package}.{service.name}/{method.name}"
                    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(method.input_type.lstrip(".")))
                    for _ in range(4 * SCALE):
                        request = cls()
                        _fill(request, rng)
                        calls += 1
                        try:
                            if method.server_streaming:
                                list(channel.unary_stream(path)(request.SerializeToString(), metadata=metadata, timeout=30))
                            else:
                                channel.unary_unary(path)(request.SerializeToString(), metadata=metadata, timeout=30)
                        except grpc.RpcError as exc:
                            if exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS):
                                failures.setdefault(path, f"{exc.code().name} {exc.details()} <- {str(request)[:300]}")
    assert calls >= 150
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
