"""A real in-process gRPC server (pytest-grpc's synchronous ``grpc.server``) for the SDK tests.

It serves small but honest implementations of InferenceService, ApiKeyService
and ModelCatalogService built on the generated servicer base classes.  Errors
leave it exactly as the Relay server sends them: trailing metadata built by
``relay_server.api.error_mapping.trailing_metadata``, so the SDK is tested
against the shared contract.  A server interceptor injects faults (fail the
next N calls of a method) and counts the attempts that reached the server.

pytest-grpc's fixtures are module-scoped: each test module gets its own
server; ``reset_state`` clears faults and recorded calls before every test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from relay_proto.relay.admin.v1 import api_keys_pb2, api_keys_pb2_grpc, catalog_pb2, catalog_pb2_grpc
from relay_proto.relay.v1 import chat_pb2, embeddings_pb2, inference_service_pb2_grpc
from relay_sdk import RetryPolicy
from relay_server.api.error_mapping import trailing_metadata
from relay_server.errors import ErrorKind
from relay_server.errors import RelayError as ServerError
from relay_server.stack.processes import free_port

REQUEST_ID = "req_x"
API_KEY = "rly_test_sk_sdk"
ADMIN_TOKEN = "admin-secret"
KEY_COUNT = 7  # 3 pages of 3
MODEL_COUNT = 8  # 3 pages of 3
# A read-named streaming RPC (served by the chat stream fake) to test stream retries:
# Relay's own streams are all inference, which is never retried.
PROBE_STREAM = "/relay.test.Probe/ListChunks"


def abort(context: grpc.ServicerContext, err: ServerError) -> None:
    """Fail the RPC the way the Relay server does (status + the shared trailing metadata)."""
    context.set_trailing_metadata(tuple(trailing_metadata(err, REQUEST_ID)))
    context.abort(err.kind.grpc_status, err.message)


@dataclass
class Faults:
    """Faults to inject, per bare method name, and the attempts seen (thread-safe)."""

    planned: dict[str, list[ServerError]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    metadata: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, method: str, times: int, err: ServerError) -> None:
        with self.lock:
            self.planned.setdefault(method, []).extend([err] * times)

    def record(self, method: str, metadata: dict[str, str]) -> ServerError | None:
        with self.lock:
            self.calls[method] += 1
            self.metadata.append(metadata)
            queue = self.planned.get(method)
            return queue.pop(0) if queue else None

    def reset(self) -> None:
        with self.lock:
            self.planned.clear()
            self.calls.clear()
            self.metadata.clear()


class FaultInterceptor(grpc.ServerInterceptor):
    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        metadata = {key: value for key, value in details.invocation_metadata if isinstance(value, str)}
        err = self._faults.record(details.method.rsplit("/", 1)[1], metadata)
        if err is None or handler is None:
            return handler

        def fail(request: Any, context: grpc.ServicerContext) -> Any:
            abort(context, err)

        def fail_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            abort(context, err)
            yield  # pragma: no cover  (makes this a generator)

        factory = grpc.unary_stream_rpc_method_handler if handler.response_streaming else grpc.unary_unary_rpc_method_handler
        return factory(
            fail_stream if handler.response_streaming else fail,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _last_text(request: chat_pb2.ChatCompletionRequest) -> str:
    content = request.messages[-1].content if request.messages else None
    return content.string_value if content is not None else ""


def _error_from_model(model: str) -> ServerError | None:
    """Model ``error:<kind>[:<code>]`` makes the fake fail with that ErrorKind (and error code)."""
    if not model.startswith("error:"):
        return None
    name, _, code = model.removeprefix("error:").partition(":")
    kind = ErrorKind[name.upper()]
    retry_after = 7 if kind is ErrorKind.RATE_LIMIT_EXCEEDED else None
    return ServerError(kind, f"injected {kind.name.lower()}", code=code or None, retry_after_s=retry_after)


class FakeInference(inference_service_pb2_grpc.InferenceServiceServicer):
    """Echoes the last user message; streams it word by word.  Completions stay UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def CreateChatCompletion(self, request: chat_pb2.ChatCompletionRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.requests.append(request)
        if (err := _error_from_model(request.model)) is not None:
            abort(context, err)
        if request.model == "slow":
            time.sleep(0.3)  # longer than the tests' per-call timeout
        text = _last_text(request)
        return chat_pb2.ChatCompletion(
            id="chatcmpl-1",
            object="chat.completion",
            model=request.model,
            choices=[
                chat_pb2.ChatChoice(
                    index=0, finish_reason="stop", message=chat_pb2.AssistantMessage(role="assistant", content=text)
                )
            ],
            usage=chat_pb2.Usage(prompt_tokens=3, completion_tokens=len(text.split()), total_tokens=3 + len(text.split())),
        )

    def StreamChatCompletion(self, request: chat_pb2.ChatCompletionRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.requests.append(request)
        if (err := _error_from_model(request.model)) is not None:
            abort(context, err)
        context.send_initial_metadata((("x-request-id", REQUEST_ID),))
        for index, word in enumerate(_last_text(request).split()):
            yield chat_pb2.ChatCompletionChunk(
                id="chatcmpl-1",
                object="chat.completion.chunk",
                model=request.model,
                choices=[chat_pb2.ChunkChoice(index=0, delta=chat_pb2.ChunkDelta(content=("" if index == 0 else " ") + word))],
            )
            if request.model == "fail-after-first":
                abort(context, ServerError(ErrorKind.NO_PROVIDER_AVAILABLE, "upstream went away"))

    def CreateEmbedding(self, request: embeddings_pb2.EmbeddingRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.requests.append(request)
        kind = request.input.WhichOneof("kind")
        texts = [request.input.string_value] if kind == "string_value" else [v.string_value for v in request.input.list_value.values]
        data = []
        for index, text in enumerate(texts):
            vector = embeddings_pb2.Embedding(index=index, object="embedding")
            vector.embedding.list_value.extend([float(len(text)), 1.0])
            data.append(vector)
        return embeddings_pb2.EmbeddingList(object="list", model=request.model, data=data)


def _page(items: list[Any], page_size: int, token: str) -> tuple[list[Any], str]:
    start = int(token or 0)
    size = page_size or 3
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


class FakeApiKeys(api_keys_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self) -> None:
        self.page_tokens: list[str] = []
        self.created: list[api_keys_pb2.CreateApiKeyRequest] = []

    def _keys(self, tenant_id: str) -> list[api_keys_pb2.ApiKey]:
        return [api_keys_pb2.ApiKey(id=f"key_{i}", tenant_id=tenant_id, name=f"k{i}") for i in range(KEY_COUNT)]

    def ListApiKeys(self, request: api_keys_pb2.ListApiKeysRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.page_tokens.append(request.page_token)
        if request.page_token and not request.page_token.isdigit():
            abort(context, ServerError(ErrorKind.BAD_REQUEST, "invalid page_token"))
        keys, next_token = _page(self._keys(request.tenant_id), request.page_size, request.page_token)
        return api_keys_pb2.ListApiKeysResponse(api_keys=keys, next_page_token=next_token)

    def GetApiKey(self, request: api_keys_pb2.GetApiKeyRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        for key in self._keys(request.tenant_id):
            if key.id == request.key_id:
                return api_keys_pb2.GetApiKeyResponse(api_key=key)
        abort(context, ServerError(ErrorKind.NOT_FOUND, f"no API key {request.key_id}"))

    def CreateApiKey(self, request: api_keys_pb2.CreateApiKeyRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.created.append(request)
        key = api_keys_pb2.ApiKey(id=f"key_new_{len(self.created)}", tenant_id=request.tenant_id, name=request.api_key.name)
        return api_keys_pb2.CreateApiKeyResponse(api_key=key, secret="rly_live_sk_" + "x" * 8)


class FakeCatalog(catalog_pb2_grpc.ModelCatalogServiceServicer):
    def __init__(self) -> None:
        self.upserts: list[catalog_pb2.UpsertCatalogModelRequest] = []

    def ListCatalogModels(self, request: catalog_pb2.ListCatalogModelsRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        models = [catalog_pb2.CatalogModel(id=f"m{i}", relay_name=f"model-{i}") for i in range(MODEL_COUNT)]
        page, next_token = _page(models, request.page_size, request.page_token)
        return catalog_pb2.ListCatalogModelsResponse(models=page, next_page_token=next_token)

    def UpsertCatalogModel(self, request: catalog_pb2.UpsertCatalogModelRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.upserts.append(request)
        return catalog_pb2.UpsertCatalogModelResponse(model=request.model)


@dataclass
class Services:
    inference: FakeInference = field(default_factory=FakeInference)
    api_keys: FakeApiKeys = field(default_factory=FakeApiKeys)
    catalog: FakeCatalog = field(default_factory=FakeCatalog)

    def reset(self) -> None:
        self.inference.requests.clear()
        self.api_keys.page_tokens.clear()
        self.api_keys.created.clear()
        self.catalog.upserts.clear()


# --- pytest-grpc wiring (its fixtures are module-scoped) -------------------------------------


@pytest.fixture(scope="module")
def grpc_addr() -> str:
    # pytest-grpc's own fixture leaves its probe socket open (a ResourceWarning).
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def faults() -> Faults:
    return Faults()


@pytest.fixture(scope="module")
def grpc_interceptors(faults: Faults) -> list[grpc.ServerInterceptor]:
    return [FaultInterceptor(faults)]


@pytest.fixture(scope="module")
def grpc_servicer() -> Services:
    return Services()


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Callable[[Services, grpc.Server], None]:
    def add(services: Services, server: grpc.Server) -> None:
        inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(services.inference, server)
        api_keys_pb2_grpc.add_ApiKeyServiceServicer_to_server(services.api_keys, server)
        catalog_pb2_grpc.add_ModelCatalogServiceServicer_to_server(services.catalog, server)
        service, method = PROBE_STREAM.strip("/").split("/")
        probe = grpc.unary_stream_rpc_method_handler(
            services.inference.StreamChatCompletion,
            request_deserializer=chat_pb2.ChatCompletionRequest.FromString,
            response_serializer=chat_pb2.ChatCompletionChunk.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: probe}),))

    return add


@pytest.fixture
def services(grpc_server: grpc.Server, grpc_servicer: Services, faults: Faults) -> Iterator[Services]:
    """The running server's fakes, with faults and records cleared."""
    grpc_servicer.reset()
    faults.reset()
    yield grpc_servicer


class SleepRecorder:
    """Stands in for time.sleep / asyncio.sleep: records the waits, waits for nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def retry_policy(sleeps: SleepRecorder) -> RetryPolicy:
    return RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.05, sleep=sleeps, async_sleep=sleeps.async_sleep)
