"""The front Envoy of the multi-node topology: one public port balanced over the gateway nodes.

Each gateway node is a complete Relay edge (its own Envoy with the transcoder in front of its
server); the front Envoy only spreads HTTP over them:

* round robin over the nodes' Envoy ports;
* an active health check on ``GET /ready`` every second (a node that is draining or has lost
  Postgres stops getting new requests within ~2 s);
* a node that refuses connections is retried on another node at once
  (``connect-failure``/``reset-before-request``: the request never reached a server, so a
  retry cannot bill twice) and ejected by outlier detection;
* requests already in flight on a node that dies are not retried: the client gets the error
  (a 503 from this Envoy) and the node's server logs the request once as it ends.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from relay_server.stack.envoy import validate_envoy_config

HEALTH_CHECK_PATH = "/ready"


def render_front_config(
    *, listen_port: int, admin_port: int, node_ports: Sequence[int], access_log_path: Path | str = "/dev/null"
) -> str:
    """Envoy config (JSON is YAML) for 127.0.0.1:``listen_port`` → the nodes on ``node_ports``."""
    if not node_ports:
        raise ValueError("the front Envoy needs at least one gateway node")
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}} for port in node_ports
    ]
    route: dict[str, object] = {
        "cluster": "gateways",
        "timeout": "0s",  # streams last as long as they last; each node's Envoy bounds them
        "retry_policy": {
            "retry_on": "connect-failure,reset-before-request",
            "num_retries": len(node_ports),
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 5,
        },
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "front",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [{"filters": [_http_manager(route, access_log_path)]}],
                }
            ],
            "clusters": [
                {
                    "name": "gateways",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "lb_policy": "ROUND_ROBIN",
                    "load_assignment": {"cluster_name": "gateways", "endpoints": [{"lb_endpoints": endpoints}]},
                    # Envoy allows 3 concurrent retries per cluster by default: a burst landing on a
                    # node that just died would get 503 for every retry past the third.
                    "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
                    "health_checks": [
                        {
                            "timeout": "1s",
                            "interval": "1s",
                            "no_traffic_interval": "1s",
                            "unhealthy_threshold": 2,
                            "healthy_threshold": 1,
                            "http_health_check": {"path": HEALTH_CHECK_PATH},
                        }
                    ],
                    "outlier_detection": {
                        "consecutive_gateway_failure": 2,
                        "consecutive_local_origin_failure": 1,
                        "split_external_local_origin_errors": True,
                        "interval": "1s",
                        "base_ejection_time": "5s",
                        "max_ejection_percent": 50,
                    },
                }
            ],
        },
    }
    return json.dumps(config, indent=1)


def _http_manager(route: dict[str, object], access_log_path: Path | str) -> dict[str, object]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "front",
            "stream_idle_timeout": "600s",
            "access_log": [
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                        "path": str(access_log_path),
                    },
                }
            ],
            "route_config": {
                "virtual_hosts": [{"name": "relay", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }
            ],
        },
    }


def write_front_config(path: Path, *, listen_port: int, admin_port: int, node_ports: Sequence[int], validate: bool = True) -> Path:
    text = render_front_config(
        listen_port=listen_port, admin_port=admin_port, node_ports=node_ports, access_log_path=path.parent / "front-access.log"
    )
    if validate:
        validate_envoy_config(text)
    path.write_text(text)
    return path


def healthy_nodes(admin_port: int) -> int:
    """How many gateway nodes the front Envoy's active health check passes now (0 if it does not answer)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(f"http://127.0.0.1:{admin_port}/clusters?format=json", timeout=2) as response:
            data = json.load(response)
    except (OSError, ValueError):
        return 0
    gateways = [c for c in data.get("cluster_statuses", []) if c.get("name") == "gateways"]
    hosts = gateways[0].get("host_statuses", []) if gateways else []
    return sum(1 for h in hosts if not h.get("health_status", {}).get("failed_active_health_check"))
