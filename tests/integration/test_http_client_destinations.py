"""Connect-time address checks for tenant-chosen (BYOK) base URLs.

The URL was checked when it was saved, but a name can be re-pointed at any
time: every connection to a guarded destination resolves the name itself and
connects only to an address ``relay_server.address_policy`` allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from relay_server.domain.provider import Credential
from relay_server.providers.http_client import Timeouts
from relay_server.providers.http_provider import _guarded
from relay_server.providers.upstream_http import IMPLEMENTATIONS, UpstreamHttp, build_upstream_http
from relay_server.settings import Settings
from tests.support.raw_http import Upstream, failure, request

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

Make = Callable[..., UpstreamHttp]


@pytest.fixture(params=IMPLEMENTATIONS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Both upstream clients (``RELAY_UPSTREAM_HTTP=native|aiohttp``) keep these rules."""
    made: list[UpstreamHttp] = []

    def build(**options: object) -> UpstreamHttp:
        made.append(build_upstream_http(Settings(upstream_http=request.param), **options))
        return made[-1]

    build.implementation = request.param  # type: ignore[attr-defined]
    yield build
    for client in made:
        await client.close()


def _guarded_request(url: str):  # type: ignore[no-untyped-def]
    return dataclasses.replace(request(url), guarded=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001"])
async def test_a_guarded_request_never_reaches_loopback_by_default(make: Make, host: str) -> None:
    client = make()
    async with Upstream() as up:
        url = up.url().replace("127.0.0.1", host)
        refused = await failure(client.send(_guarded_request(url), Timeouts(), 5))
        detail = refused.upstream_message or ""
        assert "loopback" in detail and "RELAY_ALLOW_PRIVATE_DESTINATIONS" in detail
        assert up.connections == 0
        if make.implementation == "aiohttp" and host in ("127.1", "2130706433", "0x7f000001"):  # type: ignore[attr-defined]
            return  # aiohttp refuses non-canonical IPv4 spellings as invalid URLs, for every request
        # The same host, unguarded (an operator's provider), is reached; its
        # pooled connection is not reused by a guarded request afterwards.
        assert (await client.send(request(url), Timeouts(), 5)).status == 200
        await failure(client.send(_guarded_request(url), Timeouts(), 5))
        assert up.connections == 1


async def test_private_destinations_are_reached_when_the_operator_allows_them(make: Make) -> None:
    client = make(allow_private=True)
    async with Upstream() as up:
        for _ in range(3):
            assert (await client.send(_guarded_request(up.url().replace("127.0.0.1", "localhost")), Timeouts(), 5)).status == 200
        assert up.connections == 1  # vetted connections are pooled like any other


async def test_link_local_is_refused_even_when_private_is_allowed(make: Make) -> None:
    client = make(allow_private=True)
    refused = await failure(client.send(_guarded_request("http://169.254.169.254/latest"), Timeouts(connect_s=2), 5))
    assert "link-local" in (refused.upstream_message or "")


async def test_a_name_re_pointed_after_the_check_is_not_dialled(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the first answer is a public address, every later one loopback.

    The address that was checked must be the address dialled: the upstream on
    loopback never sees a connection, whichever resolution the client uses.
    """
    client = make()
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    answers = {"count": 0}

    async def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "rebind.relay.test":
            return await real(host, port, *args, **kwargs)
        answers["count"] += 1
        # A public address (never answered here: the connect times out) that the policy allows.
        address = "8.8.8.8" if answers["count"] == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    async with Upstream() as up:
        url = up.url().replace("127.0.0.1", "rebind.relay.test")
        refused = await failure(client.send(_guarded_request(url), Timeouts(connect_s=0.5), 3))
        assert "documentation" not in (refused.upstream_message or "")  # the first answer passed the check
        assert up.connections == 0
        assert answers["count"] >= 1


async def test_only_a_tenants_own_base_url_is_guarded() -> None:
    plain = request("https://api.example.com/v1/chat/completions")
    assert _guarded(plain, Credential("c", "k", "https://llm.example.com/v1", byok=True)).guarded
    assert not _guarded(plain, Credential("c", "k", "https://llm.example.com/v1")).guarded  # an operator's pooled key
    assert not _guarded(plain, Credential("c", "k", byok=True)).guarded  # the provider's default URL
    assert not _guarded(plain, None).guarded
