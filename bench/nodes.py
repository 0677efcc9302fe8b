"""The two-node row: a second gateway node (server + Envoy) on the bench's database and Redis, a
front Envoy balancing over both (``relay_server.stack.front_envoy``, as ``make up-cluster``), and
non-streaming chat measured through it, beside one node measured in the same run.

Only throughput and latency are compared (the per-process CPU tables cover one node).  On a
machine with few cores both nodes and the front Envoy share them, so the ratio says what the extra
hop and the second node cost or gain *here*; more nodes pay off when they have cores of their own.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

from bench import scenarios
from bench.stack import BenchStack, _terminate
from relay_server.stack import envoy as stack_envoy
from relay_server.stack import processes
from relay_server.stack.front_envoy import healthy_nodes, write_front_config
from relay_server.stack.up import DESCRIPTOR, REPO, grpc_serving

SCENARIO = "chat"


def two_nodes_row(stack: BenchStack, mode: scenarios.Mode, *, concurrency: int, bounds: dict[str, Any]) -> dict[str, Any]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        second_http = _start_second_node(stack, started)
        front_port, front_admin = processes.free_port(), processes.free_port()
        config = write_front_config(stack.root / "front-envoy.json", listen_port=front_port, admin_port=front_admin,
                                    node_ports=[stack.http_port, second_http])  # fmt: skip
        with stack.paths.log("front-envoy").open("ab") as log:
            started.append(subprocess.Popen(stack_envoy.envoy_command(config, concurrency=stack.options.envoy_concurrency),
                                            stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        processes.wait_until(lambda: healthy_nodes(front_admin) == 2, timeout=30, what="front envoy health checks")
        scenario = scenarios.BY_NAME[SCENARIO]
        spec = scenarios.spec_for(stack, scenario, relay=True, mode=mode)
        through_front = dataclasses.replace(spec, url=spec.url.replace(f":{stack.http_port}/", f":{front_port}/", 1))
        run = {k: bounds[k] for k in ("requests", "duration_s", "use_wrk")}
        print(f"run  two nodes  c={concurrency} one node ...", flush=True)
        scenarios.drive(spec, concurrency=concurrency, requests=max(50, concurrency * 10), duration_s=1.0)
        one = scenarios.run_load(spec, concurrency=concurrency, **run)
        print(f"run  two nodes  c={concurrency} front envoy → 2 nodes ...", flush=True)
        scenarios.drive(through_front, concurrency=concurrency, requests=max(50, concurrency * 10), duration_s=1.0)
        two = scenarios.run_load(through_front, concurrency=concurrency, **run)
        ratio = two.rps / one.rps if one.rps else float("nan")
        return {
            "scenario": f"{SCENARIO}-2nodes", "concurrency": concurrency, "mode": mode.name,
            "one_node": one.summary(), "two_nodes": two.summary(), "rps_ratio_to_one_node": round(ratio, 2),
        }  # fmt: skip
    finally:
        for proc in reversed(started):
            _terminate(proc, timeout=20)


def _start_second_node(stack: BenchStack, started: list[subprocess.Popen[bytes]]) -> int:
    grpc_port, http_port, admin_port = (processes.free_port() for _ in range(3))
    env = {**stack.server_env(stack.options.workers), "RELAY_GRPC_PORT": str(grpc_port)}
    with stack.paths.log("server-node2").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "relay_server", "serve", "--workers", str(stack.options.workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    started.append(server)
    processes.wait_until(lambda: grpc_serving(f"127.0.0.1:{grpc_port}"), timeout=90, what="second node's server",
                         pid=server.pid, log_path=stack.paths.log("server-node2"))  # fmt: skip
    config = stack_envoy.render_envoy_config(
        http_port=http_port, grpc_host="127.0.0.1", grpc_port=grpc_port, admin_port=admin_port,
        descriptor_path=DESCRIPTOR, services=stack_envoy.http_services(DESCRIPTOR),
        max_request_bytes=32 * 1024 * 1024, access_log_path=stack.root / "envoy-node2-access.log",
    )  # fmt: skip
    path = stack.root / "envoy-node2.yaml"
    path.write_text(config)
    with stack.paths.log("envoy-node2").open("ab") as log:
        envoy = subprocess.Popen(stack_envoy.envoy_command(path, concurrency=stack.options.envoy_concurrency),
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    started.append(envoy)
    processes.wait_until(lambda: stack_envoy.envoy_ready(admin_port), timeout=30, what="second node's envoy", pid=envoy.pid)
    return http_port


def line(row: dict[str, Any]) -> str:
    one, two = row["one_node"], row["two_nodes"]
    return (f"two nodes behind the front Envoy, {row['scenario']} c={row['concurrency']}: "
            f"{two['rps']:.0f} rps (p50 {two['p50_ms']:.2f} ms) vs one node {one['rps']:.0f} rps "
            f"(p50 {one['p50_ms']:.2f} ms): ratio {row['rps_ratio_to_one_node']:.2f}")  # fmt: skip
