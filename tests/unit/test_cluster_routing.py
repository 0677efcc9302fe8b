"""The pure parts of Redis Cluster support: which key routes a command, redirect replies, cluster URLs."""

from __future__ import annotations

import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from relay_server.storage.redis.client import is_cluster_url, parse_cluster_url, tenant_key
from relay_server.storage.redis.cluster_wire import command_key, redirect
from relay_server.storage.redis.limits import noisy_key, window_key
from relay_server.storage.redis.outbound import window_keys
from relay_server.storage.redis.spend import cap_keys


def test_the_routing_key_of_each_command_shape() -> None:
    assert command_key(["EVALSHA", "abc", 2, "relay:{t}:a", "relay:{t}:b", 5]) == b"relay:{t}:a"
    assert command_key(("EVAL", "return 1", 0)) is None  # no key: any node
    assert command_key(["HMGET", "relay:circuit:{openai}", "state"]) == b"relay:circuit:{openai}"
    assert command_key(["PING"]) is None and command_key(["SCRIPT", "LOAD", "x"]) is None


def test_redirect_replies_are_parsed_and_others_are_not() -> None:
    assert redirect(ResponseError("MOVED 3999 10.0.0.2:7001")) == ("MOVED", 3999, ("10.0.0.2", 7001))
    assert redirect(ResponseError("ASK 12 h:1")) == ("ASK", 12, ("h", 1))
    assert redirect(ResponseError("NOSCRIPT No matching script")) is None
    assert redirect(b"MOVED 1 h:1") is None  # a value, not an error reply


def test_a_tenants_keys_and_a_providers_keys_each_share_one_slot() -> None:
    tenant_keys = [window_key("ten_1", "rpm"), window_key("ten_1", "requests_per_day", key_id="k"), noisy_key("ten_1"),
                   *cap_keys("ten_1", "key", "k", "d20261204"), tenant_key("ten_1", "thread_stream", "m")]  # fmt: skip
    assert len({key_slot(k.encode()) for k in tenant_keys}) == 1
    assert len({key_slot(k.encode()) for c in ("a", "b") for k in window_keys("openai", c)}) == 1


def test_cluster_urls() -> None:
    assert not is_cluster_url("redis://h:1/0")
    assert parse_cluster_url("redis+cluster://h1,h2:7002").seeds == (("h1", 6379), ("h2", 7002))
    with pytest.raises(ValueError):
        parse_cluster_url("redis://h:1")
