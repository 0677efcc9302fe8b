"""Input the REST edge must absorb before it reaches the gRPC server.

Each case below once failed a call with a 5xx (or held a connection for ten
minutes): unknown query parameters, header names gRPC metadata cannot carry,
``-bin`` and ``grpc-*`` headers, a native gRPC content type on the REST port,
and a request body that stops arriving.  Same stand-in server and real Envoy
as ``test_envoy_config.py``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_envoy_config import (  # noqa: F401 (fixtures)
    assert_no_grpc_headers,
    assert_openai_error,
    client,
    descriptor,
    envoy_for,
    gateway,
    grpc_port,
)


def test_unknown_query_parameters_are_ignored(client: httpx.Client) -> None:  # noqa: F811
    response = client.get("/v1/status", params={"api-version": "2024-06-01", "_": "1733312345", "foo": "1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}


@pytest.mark.parametrize("name", ["a|b", "a'b", "a%b", "a~b", "a!b", "a#b", "a*b", "a^b", "a`b", "a+b", "a&b", "a$b"])
def test_header_names_grpc_cannot_carry_are_dropped(client: httpx.Client, name: str) -> None:  # noqa: F811
    response = client.post("/v1/echo", json={"a": 1}, headers={name: "v", "x-kept": "yes"})
    assert response.status_code == 200, response.text
    seen = response.json()["metadata"]
    assert seen["x-kept"] == "yes"
    assert name not in seen


@pytest.mark.parametrize(
    ("name", "value"),
    [("grpc-timeout", "xx"), ("grpc-encoding", "gzip"), ("grpc-message", "x"), ("x-anything-bin", "!!not base64")],
)
def test_headers_that_steer_grpc_are_dropped(client: httpx.Client, name: str, value: str) -> None:  # noqa: F811
    response = client.post("/v1/echo", json={"a": 1}, headers={name: value})
    assert response.status_code == 200, response.text
    assert name not in response.json()["metadata"]
    assert_no_grpc_headers(response)


def test_native_grpc_content_type_is_refused_with_415(client: httpx.Client) -> None:  # noqa: F811
    response = client.post("/v1/echo", content=b"\x00\x00\x00\x00\x00", headers={"content-type": "application/grpc"})
    assert_openai_error(response, 415, "unsupported_media_type", "invalid_request_error")
    assert_no_grpc_headers(response)


def test_stalled_request_body_is_cut_by_the_request_timeout(envoy_for, grpc_port: int) -> None:  # noqa: F811
    base, _ = envoy_for(grpc_port, request_timeout="1s")
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"a\":")  # fmt: skip
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert waited < 8, waited  # the 1 s request timeout, not the 600 s stream idle timeout


def test_long_response_stream_outlives_the_request_timeout(envoy_for, grpc_port: int, tmp_path: Path) -> None:  # noqa: F811
    # The request timeout is disarmed once the response starts: SSE streams are unaffected.
    base, _ = envoy_for(grpc_port, request_timeout="1s")
    with httpx.Client(base_url=base, trust_env=False, timeout=10) as c:
        response = c.post("/v1/chat", content=b'{"model":"m"}')
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")


def test_an_unknown_long_path_is_echoed_clipped(client: httpx.Client) -> None:  # noqa: F811
    path = "/v1/" + "a" * 5000
    error = assert_openai_error(client.get(path), 404, "unknown_url", "invalid_request_error")
    assert error["message"] == f"Invalid URL (GET {path[:200]})"
