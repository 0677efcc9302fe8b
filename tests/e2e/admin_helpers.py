"""Helpers for the admin end-to-end tests: REST clients, waiting, and
per-worker gRPC connections."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import psutil
from google.protobuf import struct_pb2

from relay_proto.relay.v1 import chat_pb2, inference_service_pb2_grpc
from tests.support.stack import RelayStack


def rest(stack: RelayStack, token: str) -> httpx.Client:
    """A client for the REST admin API through Envoy (paths start with /v1)."""
    return httpx.Client(base_url=f"http://127.0.0.1:{stack.http_port}", headers={"authorization": f"Bearer {token}"}, timeout=30)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI-shaped error body, checked for shape."""
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]


def chat_request() -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))]
    )


def worker_pids(stack: RelayStack) -> list[int]:
    supervisor = psutil.Process(stack._procs[0].pid)
    return [child.pid for child in supervisor.children()]


def channels_on_every_worker(stack: RelayStack, limit: int = 64) -> list[grpc.Channel]:
    """Direct gRPC connections from this process until every worker holds one.

    Each channel gets its own TCP connection (a local subchannel pool) and the
    kernel spreads connections over the SO_REUSEPORT workers; which worker
    holds which connection is read from the sockets of both ends.
    """
    pids = worker_pids(stack)
    channels: list[grpc.Channel] = []
    for _ in range(limit):
        channel = grpc.insecure_channel(stack.grpc_addr, options=[("grpc.use_local_subchannel_pool", 1)])
        grpc.channel_ready_future(channel).result(timeout=10)
        channels.append(channel)
        ours = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == stack.grpc_port}
        if all(_held(pid, stack.grpc_port, ours) for pid in pids):
            return channels
    raise AssertionError("could not get a connection to every worker")


def _held(pid: int, port: int, client_ports: set[int]) -> bool:
    return any(
        c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr and c.raddr.port in client_ports
        for c in psutil.Process(pid).net_connections(kind="tcp")
    )


def chat_stub(channel: grpc.Channel) -> inference_service_pb2_grpc.InferenceServiceStub:
    return inference_service_pb2_grpc.InferenceServiceStub(channel)
