"""The rendered Envoy config, validated by Envoy and exercised end to end.

A tiny grpc.aio server stands in for Relay's: it speaks the same error
contract (trailers-only abort with ``x-relay-http-status`` + ``x-relay-error``)
behind a real Envoy running the rendered config.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.api import annotations_pb2, httpbody_pb2
from google.protobuf import empty_pb2, json_format, struct_pb2

from relay_server.stack import envoy as stack_envoy
from relay_server.stack.processes import free_port, port_open, wait_until

SERVICE = "relaytest.v1.TestService"
MAX_BYTES = 64 * 1024

TEST_PROTO = """
syntax = "proto3";
package relaytest.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/struct.proto";

service TestService {
  rpc Status(google.protobuf.Empty) returns (google.protobuf.Struct) {
    option (google.api.http) = { get: "/v1/status" };
  }
  rpc Echo(google.protobuf.Struct) returns (google.protobuf.Struct) {
    option (google.api.http) = { post: "/v1/echo" body: "*" };
  }
  rpc Chat(google.api.HttpBody) returns (stream google.api.HttpBody) {
    option (google.api.http) = { post: "/v1/chat" body: "*" };
  }
  // Annotated, but outside the routed /v1/ prefix: must stay unreachable.
  rpc Internal(google.protobuf.Struct) returns (google.protobuf.Struct) {
    option (google.api.http) = { post: "/internal/echo" body: "*" };
  }
}

// No HTTP annotations: not a REST service.
service HiddenService {
  rpc Ping(google.protobuf.Struct) returns (google.protobuf.Struct);
}
"""


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("proto")
    (root / "relaytest/v1").mkdir(parents=True)
    (root / "relaytest/v1/test.proto").write_text(TEST_PROTO)
    # googleapis-common-protos ships google/api/*.proto next to its modules.
    googleapis = Path(annotations_pb2.__file__).resolve().parents[2]
    out = root / "test.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", f"-I{googleapis}", "--include_imports",
         f"--descriptor_set_out={out}", "relaytest/v1/test.proto"],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def _render(descriptor: Path, *, grpc_port: int, log: Path, **options: str) -> tuple[str, int, int]:
    http_port, admin_port = free_port(), free_port()
    text = stack_envoy.render_envoy_config(
        http_port=http_port,
        grpc_host="127.0.0.1",
        grpc_port=grpc_port,
        admin_port=admin_port,
        descriptor_path=descriptor,
        services=[SERVICE],
        max_request_bytes=MAX_BYTES,
        access_log_path=log,
        **options,  # type: ignore[arg-type]
    )
    return text, http_port, admin_port


@pytest.fixture(scope="module")
def envoy_for(tmp_path_factory: pytest.TempPathFactory, descriptor: Path, grpc_port: int) -> Iterator[object]:
    """A factory: start an Envoy (child process) in front of a gRPC port.

    Depends on ``grpc_port`` only so that every Envoy (and its upstream
    connections) is gone before the gRPC server stops.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(grpc_port: int, **options: str) -> tuple[str, Path]:
        tmp = tmp_path_factory.mktemp("envoy")
        text, http_port, admin_port = _render(descriptor, grpc_port=grpc_port, log=tmp / "access.log", **options)
        (tmp / "envoy.yaml").write_text(text)
        with (tmp / "envoy.log").open("wb") as log:
            proc = subprocess.Popen(stack_envoy.envoy_command(tmp / "envoy.yaml"), stdout=log, stderr=log)
        procs.append(proc)
        wait_until(lambda: stack_envoy.envoy_ready(admin_port) and port_open("127.0.0.1", http_port),
                   timeout=30, what="envoy", pid=proc.pid, log_path=tmp / "envoy.log")
        return f"http://127.0.0.1:{http_port}", tmp / "access.log"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _abort_metadata(status: int, body: dict[str, object]) -> tuple[tuple[str, str], ...]:
    return (
        ("x-relay-http-status", str(status)),
        ("x-relay-error", json.dumps(body, ensure_ascii=True)),
        ("x-should-retry", "false"),
    )


async def _echo(request: struct_pb2.Struct, context: grpc.aio.ServicerContext) -> struct_pb2.Struct:
    fields = json_format.MessageToDict(request)
    if fields.get("crash"):
        raise ValueError('bad "quote" ünicode\nnewline 100%')
    reply = struct_pb2.Struct()
    metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    # As Relay's server does: its own request id, sent with the response.
    await context.send_initial_metadata((("x-request-id", "req_from_server"),))
    reply.update({"saw": fields, "metadata": metadata})
    return reply


async def _status(request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> struct_pb2.Struct:
    reply = struct_pb2.Struct()
    reply.update({"ok": True})
    return reply


async def _chat(request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    model = json.loads(request.data or b"{}").get("model", "")
    if model.startswith("err-"):
        status = int(model.removeprefix("err-"))
        body = {"error": {"message": f"failure {status}", "type": "insufficient_quota", "param": None,
                          "code": f"code_{status}"}}
        # Before any message: a trailers-only response, so the metadata
        # reaches Envoy as response headers.
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"failure {status}",
                            trailing_metadata=_abort_metadata(status, body))
    for i in range(2):
        yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=f'data: {{"i":{i}}}\n\n'.encode())
    yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    """The stand-in server, on its own event loop in a thread (module scope)."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping = asyncio.Event()

    async def serve() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Echo": grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=struct_pb2.Struct.FromString,
                response_serializer=struct_pb2.Struct.SerializeToString),
            "Status": grpc.unary_unary_rpc_method_handler(
                _status, request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=struct_pb2.Struct.SerializeToString),
            "Internal": grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=struct_pb2.Struct.FromString,
                response_serializer=struct_pb2.Struct.SerializeToString),
            "Chat": grpc.unary_stream_rpc_method_handler(
                _chat, request_deserializer=httpbody_pb2.HttpBody.FromString,
                response_serializer=httpbody_pb2.HttpBody.SerializeToString),
        })])  # fmt: skip
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started.set()
        await stopping.wait()
        await server.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield port
    loop.call_soon_threadsafe(stopping.set)
    thread.join(10)
    assert not thread.is_alive(), "the stand-in gRPC server did not stop"
    loop.close()


@pytest.fixture(scope="module")
def gateway(envoy_for, grpc_port: int) -> tuple[str, Path]:  # type: ignore[no-untyped-def]
    return envoy_for(grpc_port)


@pytest.fixture
def client(gateway: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway[0], trust_env=False, timeout=10) as c:
        yield c


def assert_openai_error(response: httpx.Response, status: int, code: str, etype: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == etype
    assert error["param"] is None
    assert error["message"]
    return error


def assert_no_grpc_headers(response: httpx.Response) -> None:
    leaked = [h for h in response.headers if h.startswith(("grpc-", "x-relay-"))]
    assert leaked == []


# --- config rendering and validation --------------------------------------------------


def test_rendered_config_passes_envoy_validation(descriptor: Path, tmp_path: Path) -> None:
    text, _, _ = _render(descriptor, grpc_port=free_port(), log=tmp_path / "access.log")
    stack_envoy.validate_envoy_config(text)
    # The access log format must never reference the API key's header.
    config_lines = [line for line in text.splitlines() if not line.strip().startswith(("#", "--"))]
    assert not [line for line in config_lines if "authorization" in line.lower()]


def test_validation_raises_with_envoys_reason(descriptor: Path) -> None:
    text = stack_envoy.render_envoy_config(
        http_port=free_port(), grpc_host="127.0.0.1", grpc_port=free_port(), admin_port=free_port(),
        descriptor_path=descriptor, services=["relaytest.v1.NoSuchService"], max_request_bytes=MAX_BYTES,
    )  # fmt: skip
    with pytest.raises(stack_envoy.EnvoyConfigError, match=re.escape("Could not find 'relaytest.v1.NoSuchService'")):
        stack_envoy.validate_envoy_config(text)


def test_a_lua_syntax_error_fails_validation(descriptor: Path, tmp_path: Path) -> None:
    bad_lua = tmp_path / "bad.lua"
    bad_lua.write_text("function envoy_on_response(handle)\n  local x = = 1\nend\n")
    text = stack_envoy.render_envoy_config(
        http_port=free_port(), grpc_host="127.0.0.1", grpc_port=free_port(), admin_port=free_port(),
        descriptor_path=descriptor, services=[SERVICE], max_request_bytes=MAX_BYTES, lua_path=bad_lua,
    )  # fmt: skip
    with pytest.raises(stack_envoy.EnvoyConfigError, match="unexpected symbol"):
        stack_envoy.validate_envoy_config(text)


@pytest.mark.parametrize(
    "override",
    [
        {"http_port": 0},
        {"grpc_port": 70000},
        {"admin_port": True},
        {"services": []},
        {"services": ["NoPackage"]},
        {"services": ["relay.v1.X; rm -rf /"]},
        {"max_request_bytes": 0},
        {"route_prefixes": ["v1"]},
        {"route_prefixes": []},
        {"grpc_host": "bad host\n"},
        {"stream_idle_timeout": "10m"},
        {"request_timeout": "0s"},
        {"request_timeout": "1m"},
        {"openapi_path": "/nonexistent/openapi.json"},
    ],
)
def test_render_rejects_bad_arguments(descriptor: Path, override: dict[str, object]) -> None:
    args: dict[str, object] = dict(
        http_port=8080, grpc_host="127.0.0.1", grpc_port=50051, admin_port=9901,
        descriptor_path=descriptor, services=[SERVICE], max_request_bytes=MAX_BYTES,
    )  # fmt: skip
    args.update(override)
    with pytest.raises(ValueError):
        stack_envoy.render_envoy_config(**args)  # type: ignore[arg-type]


def test_unspecified_host_is_dialled_on_loopback(descriptor: Path) -> None:
    text = stack_envoy.render_envoy_config(
        http_port=8080, grpc_host="0.0.0.0", grpc_port=50051, admin_port=9901,
        descriptor_path=descriptor, services=[SERVICE], max_request_bytes=MAX_BYTES,
    )  # fmt: skip
    assert '"127.0.0.1", port_value: 50051' in text
    assert "type: STATIC" in text


def test_openapi_route_tracks_the_document_and_its_size_cap(
    descriptor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = tmp_path / "openapi.json"
    args: dict[str, object] = dict(
        http_port=8080, grpc_host="127.0.0.1", grpc_port=50051, admin_port=9901,
        descriptor_path=descriptor, services=[SERVICE], max_request_bytes=MAX_BYTES, openapi_path=document,
    )  # fmt: skip
    document.write_text('{"openapi": "3.1.0"}')
    first = stack_envoy.render_envoy_config(**args)  # type: ignore[arg-type]
    document.write_text('{"openapi": "3.1.1"}')
    # Envoy reads the file only at start: a new document must be a new config.
    assert stack_envoy.render_envoy_config(**args) != first  # type: ignore[arg-type]
    monkeypatch.setattr(stack_envoy, "MAX_OPENAPI_BYTES", 8)
    with pytest.raises(ValueError, match="at most 8"):
        stack_envoy.render_envoy_config(**args)  # type: ignore[arg-type]


def test_http_services_lists_only_annotated_services(descriptor: Path) -> None:
    assert stack_envoy.http_services(descriptor) == [SERVICE]


# --- behaviour through a running Envoy ---------------------------------------------------


def test_unary_call_is_transcoded_with_request_id_and_authorization(client: httpx.Client) -> None:
    response = client.post("/v1/echo", json={"a": 1},
                           headers={"authorization": "Bearer sk-secret-1", "x-request-id": "client-chosen"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert_no_grpc_headers(response)
    body = response.json()
    assert body["saw"] == {"a": 1}
    seen = body["metadata"]
    assert seen["authorization"] == "Bearer sk-secret-1"
    # Envoy mints the id the server sees (a client cannot pick it) ...
    assert seen["x-request-id"] not in ("client-chosen", "")
    # ... and leaves the server's own response id alone.
    assert response.headers["x-request-id"] == "req_from_server"


def test_openapi_document_is_served_by_envoy_itself(client: httpx.Client) -> None:
    response = client.get("/v1/openapi.json")  # no credentials, no gRPC method behind it
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    # Byte for byte, far past Envoy's default 4 KiB direct-response cap, and not
    # reshaped by the local-reply error formats.
    assert response.content == stack_envoy.OPENAPI_PATH.read_bytes()
    assert len(response.content) > 4096
    assert_openai_error(client.post("/v1/openapi.json", content=b"{}"), 404, "unknown_url", "invalid_request_error")


def test_stream_is_relayed_as_server_sent_events(client: httpx.Client) -> None:
    response = client.post("/v1/chat", content=b'{"model":"m"}')
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == 'data: {"i":0}\n\ndata: {"i":1}\n\ndata: [DONE]\n\n'
    assert_no_grpc_headers(response)


@pytest.mark.parametrize("status", [402, 422, 429, 502])
def test_annotated_error_gets_exact_status_and_body(client: httpx.Client, status: int) -> None:
    response = client.post("/v1/chat", content=json.dumps({"model": f"err-{status}"}).encode())
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"message": f"failure {status}", "type": "insufficient_quota",
                                         "param": None, "code": f"code_{status}"}}
    assert response.headers["x-should-retry"] == "false"  # other trailing metadata passes
    assert_no_grpc_headers(response)


def test_unannotated_grpc_error_gets_openai_shaped_fallback(client: httpx.Client) -> None:
    response = client.post("/v1/echo", json={"crash": True})
    error = assert_openai_error(response, 500, "unknown", "server_error")
    # Quotes, a newline and non-ASCII survive as valid JSON.
    assert 'bad "quote" ünicode\nnewline 100%' in str(error["message"])
    assert_no_grpc_headers(response)


def test_malformed_json_is_an_openai_400(client: httpx.Client) -> None:
    response = client.post("/v1/echo", content=b'{"a":', headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_json", "invalid_request_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/nope"), ("GET", "/v1/echo/extra"), ("GET", "/"), ("GET", "/healthz"),
     ("POST", "/internal/echo"), ("POST", f"/{SERVICE}/Echo")],
)  # fmt: skip
def test_unknown_paths_are_openai_404s(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, content=b"{}")
    error = assert_openai_error(response, 404, "unknown_url", "invalid_request_error")
    assert error["message"] == f"Invalid URL ({method} {path})"


def test_native_grpc_is_not_proxied_by_the_public_port(gateway: tuple[str, Path]) -> None:
    address = gateway[0].removeprefix("http://")
    with grpc.insecure_channel(address) as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo", request_serializer=struct_pb2.Struct.SerializeToString,
                                   response_deserializer=struct_pb2.Struct.FromString)
        with pytest.raises(grpc.RpcError) as failure:
            echo(struct_pb2.Struct(), timeout=10)
    assert failure.value.code() != grpc.StatusCode.OK


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/echo"])
def test_body_over_the_limit_is_an_openai_413(client: httpx.Client, path: str) -> None:
    payload = json.dumps({"model": "m", "pad": "x" * (MAX_BYTES + 1)}).encode()
    response = client.post(path, content=payload)
    error = assert_openai_error(response, 413, "request_too_large", "invalid_request_error")
    assert str(MAX_BYTES) in str(error["message"])


def test_body_under_the_limit_passes(client: httpx.Client) -> None:
    payload = json.dumps({"model": "m", "pad": "x" * (MAX_BYTES - 100)}).encode()
    assert client.post("/v1/chat", content=payload).status_code == 200


def test_server_down_is_an_openai_503(envoy_for) -> None:  # type: ignore[no-untyped-def]
    base_url, _ = envoy_for(free_port())  # nothing listens there
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as c:
        for path in ("/v1/echo", "/v1/chat"):
            response = c.post(path, content=b'{"model":"m"}')
            assert_openai_error(response, 503, "service_unavailable", "server_error")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/echo"), ("GET", "/v1/status")])
def test_access_log_has_request_id_and_never_the_api_key(
    client: httpx.Client, gateway: tuple[str, Path], method: str, path: str
) -> None:
    marker = f"sk-never-logged-{method}"
    response = client.request(method, path, json={} if method == "POST" else None,
                              headers={"authorization": f"Bearer {marker}", "user-agent": marker[3:]})  # fmt: skip
    assert response.status_code == 200
    log = gateway[1]

    def logged() -> bool:
        return log.exists() and marker[3:] in log.read_text()

    wait_until(logged, timeout=15, what="access log line")  # Envoy flushes the file about once a second
    line = next(json.loads(x) for x in log.read_text().splitlines() if marker[3:] in x)
    # The public method and path, not the gRPC ones the transcoder made of them.
    assert (line["method"], line["path"], line["status"]) == (method, path, 200)
    assert line["request_id"]  # Envoy's id, as the server received it
    if path == "/v1/echo":
        assert line["relay_request_id"] == "req_from_server"
    assert marker not in log.read_text()
