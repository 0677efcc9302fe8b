"""Connect-time address checks for tenant-chosen (BYOK) base URLs.

The URL was checked when it was saved, but a name can be re-pointed at any
time: every connection to a guarded destination resolves the name itself and
connects only to an address ``relay_server.address_policy`` allows.
"""

from __future__ import annotations

import dataclasses

import pytest

from relay_server.domain.provider import Credential
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.http_provider import _guarded
from tests.support.raw_http import Upstream, failure, request

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def _guarded_request(url: str):  # type: ignore[no-untyped-def]
    return dataclasses.replace(request(url), guarded=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001"])
async def test_a_guarded_request_never_reaches_loopback_by_default(host: str) -> None:
    client = HttpClient.create()
    try:
        async with Upstream() as up:
            url = up.url().replace("127.0.0.1", host)
            refused = await failure(client.send(_guarded_request(url), Timeouts(), 5))
            detail = refused.upstream_message or ""
            assert "loopback" in detail and "RELAY_ALLOW_PRIVATE_DESTINATIONS" in detail
            assert up.connections == 0
            # The same host, unguarded (an operator's provider), is reached; its
            # pooled connection is not reused by a guarded request afterwards.
            assert (await client.send(request(url), Timeouts(), 5)).status == 200
            await failure(client.send(_guarded_request(url), Timeouts(), 5))
            assert up.connections == 1
    finally:
        await client.close()


async def test_private_destinations_are_reached_when_the_operator_allows_them() -> None:
    client = HttpClient.create(allow_private=True)
    try:
        async with Upstream() as up:
            for _ in range(3):
                assert (await client.send(_guarded_request(up.url().replace("127.0.0.1", "localhost")), Timeouts(), 5)).status == 200
            assert up.connections == 1  # vetted connections are pooled like any other
    finally:
        await client.close()


async def test_link_local_is_refused_even_when_private_is_allowed() -> None:
    client = HttpClient.create(allow_private=True)
    try:
        refused = await failure(client.send(_guarded_request("http://169.254.169.254/latest"), Timeouts(connect_s=2), 5))
        assert "link-local" in (refused.upstream_message or "")
    finally:
        await client.close()


async def test_only_a_tenants_own_base_url_is_guarded() -> None:
    plain = request("https://api.example.com/v1/chat/completions")
    assert _guarded(plain, Credential("c", "k", "https://llm.example.com/v1", byok=True)).guarded
    assert not _guarded(plain, Credential("c", "k", "https://llm.example.com/v1")).guarded  # an operator's pooled key
    assert not _guarded(plain, Credential("c", "k", byok=True)).guarded  # the provider's default URL
    assert not _guarded(plain, None).guarded
