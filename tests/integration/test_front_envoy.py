"""The front Envoy of the multi-node topology: its config is valid Envoy and says what the docs say."""

from __future__ import annotations

import json

import pytest

from relay_server.settings import Settings
from relay_server.stack.cluster_up import node_settings
from relay_server.stack.envoy import validate_envoy_config
from relay_server.stack.front_envoy import HEALTH_CHECK_PATH, render_front_config


def test_the_front_config_validates_and_health_checks_every_node() -> None:
    text = render_front_config(listen_port=18080, admin_port=19901, node_ports=[18081, 18082])
    validate_envoy_config(text)
    cluster = json.loads(text)["static_resources"]["clusters"][0]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [18081, 18082]
    assert cluster["health_checks"][0]["http_health_check"]["path"] == HEALTH_CHECK_PATH == "/ready"
    retry = json.loads(text)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]
    # Only failures before the request reached a server are retried: a retry never bills twice.
    assert set(retry["retry_on"].split(",")) == {"connect-failure", "reset-before-request"}
    with pytest.raises(ValueError):
        render_front_config(listen_port=1, admin_port=2, node_ports=[])


def test_nodes_take_the_ports_after_the_front() -> None:
    base = Settings()
    nodes = [node_settings(base, i) for i in range(2)]
    assert [n.http_port for n in nodes] == [base.http_port + 1, base.http_port + 2]
    assert len({n.grpc_port for n in nodes} | {base.grpc_port}) == 3
    assert len({n.state_dir for n in nodes}) == 2
