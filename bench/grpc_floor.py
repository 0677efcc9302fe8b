"""The floor under Relay's per-message cost: a bare grpc.aio server on uvloop, nothing else.

Serves one server-streaming method the way the worker does (``HttpBody`` frames, initial
metadata sent before the first frame, ``grpc.so_reuseport``) to a client in another process
and prints the server process's CPU per call and per streamed message.  No Relay code runs,
so whatever it prints is what gRPC itself costs the worker before any pipeline step: the
share of the stage tables' "event loop + gRPC core" row that no change inside Relay removes.

    PYTHONPATH=server:proto_python:. .venv/bin/python bench/grpc_floor.py --calls 2000 --messages 1,20
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time

import grpc
from google.api import httpbody_pb2

_CLIENT = """
import sys, grpc
from google.api import httpbody_pb2
port, calls = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
method = channel.unary_stream("/floor.Floor/Stream", request_serializer=httpbody_pb2.HttpBody.SerializeToString,
                              response_deserializer=httpbody_pb2.HttpBody.FromString)
request = httpbody_pb2.HttpBody(data=b"{}")
for _ in range(max(50, calls // 10)):
    list(method(request))
print("go", flush=True)
sys.stdin.readline()
for _ in range(calls):
    list(method(request))
"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(calls: int, messages: int, headers: bool) -> tuple[float, float]:
    frame = httpbody_pb2.HttpBody(content_type="text/event-stream", data=b"data: " + b"x" * 200 + b"\n\n")

    async def handler(request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext):  # noqa: ANN202
        if headers:
            await context.send_initial_metadata((("x-request-id", "req_0123456789"),))
        for _ in range(messages):
            yield frame

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    method = grpc.unary_stream_rpc_method_handler(
        handler, request_deserializer=httpbody_pb2.HttpBody.FromString,
        response_serializer=httpbody_pb2.HttpBody.SerializeToString,
    )  # fmt: skip
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", {"Stream": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, str(port), str(calls)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    loop = asyncio.get_running_loop()
    try:
        assert client.stdout is not None and client.stdin is not None
        await loop.run_in_executor(None, client.stdout.readline)  # warmed up
        cpu, wall = _cpu(), time.perf_counter()
        client.stdin.write("\n")
        client.stdin.flush()
        await loop.run_in_executor(None, client.wait)
        return (_cpu() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6
    finally:
        if client.poll() is None:
            client.kill()
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--messages", default="1,20", help="messages per call, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 (the worker's loop)

    uvloop.install()
    print("messages  headers  server CPU µs/call  µs/message  wall µs/call")
    for messages in (int(m) for m in args.messages.split(",")):
        for headers in (False, True):
            runs = [asyncio.run(_measure(args.calls, messages, headers)) for _ in range(args.repeat)]
            cpu = sorted(r[0] for r in runs)[len(runs) // 2]
            wall = sorted(r[1] for r in runs)[len(runs) // 2]
            print(f"{messages:>8}  {'yes' if headers else 'no':>7}  {cpu:>18.1f}  {cpu / messages:>10.1f}  {wall:>12.1f}")


if __name__ == "__main__":
    main()
