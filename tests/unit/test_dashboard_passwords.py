"""The console's password hashing and the Envoy route to it (no servers)."""

from __future__ import annotations

import json
import re

import pytest

from relay_server.dashboard.passwords import check_strength, hash_password, verify_password
from relay_server.stack import envoy as stack_envoy


def test_scrypt_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$16384$8$1$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert hash_password("correct horse battery") != stored  # salted


@pytest.mark.parametrize("stored", ["", "bcrypt$x", "scrypt$1$2$3$!!$??", "scrypt$16384$8$1$AAAA"])
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert verify_password("anything at all", stored) is False


def test_short_passwords_are_refused() -> None:
    assert check_strength("short") is not None
    assert check_strength("long enough pass") is None


def test_envoy_routes_dashboard_to_its_own_cluster_before_the_api(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.stack import REPO  # noqa: PLC0415

    descriptor = REPO / "envoy" / "relay.pb"
    args = dict(http_port=8080, grpc_host="127.0.0.1", grpc_port=50051, admin_port=9901, descriptor_path=descriptor,
                services=["relay.v1.OpenAIService"], max_request_bytes=1024)
    without = stack_envoy.render_envoy_config(**args)  # type: ignore[arg-type]
    assert "relay_dashboard" not in without
    text = stack_envoy.render_envoy_config(**args, dashboard_port=8090)  # type: ignore[arg-type]
    routes = json.loads(re.search(r"routes: (\[.*\])", text)[1])  # type: ignore[index]
    names = [r.get("name", r["match"].get("prefix")) for r in routes]
    assert names.index("dashboard") < names.index("/v1/")
    dashboard = routes[names.index("dashboard")]
    assert dashboard["match"] == {"path_separated_prefix": "/dashboard"}
    assert {f: c["disabled"] for f, c in dashboard["typed_per_filter_config"].items()} == {
        "envoy.filters.http.grpc_json_transcoder": True, "envoy.filters.http.lua": True,
    }
    assert '"port_value": 8090' in text
    with pytest.raises(ValueError):
        stack_envoy.render_envoy_config(**args, dashboard_port=0)  # type: ignore[arg-type]
