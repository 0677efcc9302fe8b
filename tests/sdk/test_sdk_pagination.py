"""Pagers walk AIP-158 pages lazily, sync and async."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import relay_sdk as sdk
from relay_proto.relay.admin.v1 import api_keys_pb2
from relay_sdk import AsyncRelay, Pager, Relay, RetryPolicy
from relay_server.errors import ErrorKind
from relay_server.errors import RelayError as ServerError
from tests.sdk.conftest import ADMIN_TOKEN, KEY_COUNT, MODEL_COUNT, Faults, Services

grpc_max_workers = 8


@pytest.fixture
def client(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> Iterator[Relay]:
    with Relay(grpc_addr, admin_token=ADMIN_TOKEN, timeout=5.0, retry_policy=retry_policy) as relay:
        yield relay


def test_iterating_walks_three_pages_lazily(client: Relay, services: Services, faults: Faults) -> None:
    pager = client.api_keys.iter_api_keys(tenant_id="t1", page_size=3)
    assert faults.calls["ListApiKeys"] == 0  # nothing fetched before iteration
    items = iter(pager)
    first_page = [next(items) for _ in range(3)]
    assert faults.calls["ListApiKeys"] == 1
    rest = list(items)
    keys = first_page + rest
    assert [k.id for k in keys] == [f"key_{i}" for i in range(KEY_COUNT)]
    assert all(isinstance(k, api_keys_pb2.ApiKey) and k.tenant_id == "t1" for k in keys)
    assert services.api_keys.page_tokens == ["", "3", "6"]


def test_pages_gives_the_raw_responses_and_a_fresh_walk_starts_over(client: Relay, services: Services) -> None:
    pager = client.api_keys.iter_api_keys(tenant_id="t1")
    pages = list(pager.pages())
    assert [len(p.api_keys) for p in pages] == [3, 3, 1]
    assert [p.next_page_token for p in pages] == ["3", "6", ""]
    assert len(list(pager)) == KEY_COUNT
    assert services.api_keys.page_tokens == ["", "3", "6", "", "3", "6"]


def test_a_starting_page_token_is_honoured(client: Relay, services: Services) -> None:
    keys = list(client.api_keys.iter_api_keys(api_keys_pb2.ListApiKeysRequest(page_token="3")))
    assert [k.id for k in keys] == [f"key_{i}" for i in range(3, KEY_COUNT)]
    assert services.api_keys.page_tokens == ["3", "6"]


def test_a_transient_failure_mid_walk_is_retried(client: Relay, faults: Faults) -> None:
    iterator = iter(client.api_keys.iter_api_keys())
    next(iterator)
    faults.fail_next("ListApiKeys", 1, ServerError(ErrorKind.NO_PROVIDER_AVAILABLE, "blip"))
    assert len(list(iterator)) == KEY_COUNT - 1
    assert faults.calls["ListApiKeys"] == 4


def test_a_bad_page_token_raises_bad_request(client: Relay) -> None:
    with pytest.raises(sdk.BadRequestError):
        list(client.api_keys.iter_api_keys(page_token="not-a-token"))


def test_a_server_repeating_its_page_token_does_not_loop_forever() -> None:
    page = api_keys_pb2.ListApiKeysResponse(api_keys=[api_keys_pb2.ApiKey(id="a")], next_page_token="same")
    pager: Pager[api_keys_pb2.ApiKey, api_keys_pb2.ListApiKeysResponse] = Pager(lambda token: page, "api_keys")
    with pytest.raises(RuntimeError, match="same page token"):
        list(pager)


@pytest.mark.asyncio
async def test_async_pager_walks_three_pages(grpc_addr: str, services: Services, faults: Faults) -> None:
    async with AsyncRelay(grpc_addr, admin_token=ADMIN_TOKEN) as relay:
        pager = relay.model_catalog.iter_catalog_models(page_size=3)
        assert faults.calls["ListCatalogModels"] == 0
        models = [m.id async for m in pager]
        pages = [len(p.models) async for p in pager.pages()]
    assert models == [f"m{i}" for i in range(MODEL_COUNT)]
    assert pages == [3, 3, 2]
    assert faults.calls["ListCatalogModels"] == 6
