"""The address rules for webhook destinations, the resolver's filtering, and
the save-time refusal of IP literals that can never receive a webhook."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.config_values import validate_entry
from relay_server.webhook_destinations import (
    GuardedResolver,
    RefusedDestination,
    check_host,
    classify,
    parse_literal,
    refusal_of,
)

# address, allowed by default, allowed with webhook_allow_private
ADDRESSES = [
    ("8.8.8.8", True, True),
    ("2606:4700::1111", True, True),
    ("::ffff:8.8.8.8", True, True),  # mapped public IPv4: judged as 8.8.8.8
    ("2002:808:808::1", True, True),  # 6to4 of a public IPv4
    ("127.0.0.1", False, True),
    ("127.45.6.7", False, True),
    ("::1", False, True),
    ("::ffff:127.0.0.1", False, True),
    ("10.0.0.5", False, True),
    ("172.16.0.1", False, True),
    ("172.31.255.255", False, True),
    ("192.168.1.1", False, True),
    ("100.64.0.1", False, True),
    ("fd00::1", False, True),
    ("fc00::1", False, True),
    ("169.254.169.254", False, False),
    ("::ffff:169.254.169.254", False, False),
    ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 of 169.254.169.254
    ("2002:a9fe:a9fe::1", False, False),  # 6to4 of 169.254.169.254
    ("fe80::1", False, False),
    ("fe80::1%eth0", False, False),
    ("fd00:ec2::254", False, False),  # AWS metadata over IPv6, inside fc00::/7
    ("100.100.100.200", False, False),  # Alibaba Cloud metadata, inside 100.64/10
    ("0.0.0.0", False, False),
    ("0.1.2.3", False, False),
    ("::", False, False),
    ("::ffff:0.0.0.0", False, False),
    ("::127.0.0.1", False, False),  # deprecated IPv4-compatible form
    ("224.0.0.1", False, False),
    ("ff02::1", False, False),
    ("240.0.0.1", False, False),
    ("255.255.255.255", False, False),
    ("192.0.2.10", False, False),
    ("2001:db8::1", False, False),
]


@pytest.mark.parametrize(("address", "default", "with_private"), ADDRESSES)
def test_address_table(address: str, default: bool, with_private: bool) -> None:
    verdict = classify(ipaddress.ip_address(address))
    assert (verdict is None) is default
    assert (verdict is None or not verdict.always) is with_private
    for allow_private, allowed in ((False, default), (True, with_private)):
        if allowed:
            check_host(address, allow_private=allow_private)
        else:
            with pytest.raises(RefusedDestination, match=f"destination {address} is "):
                check_host(address, allow_private=allow_private)


def test_messages_say_what_to_do_and_nothing_else() -> None:
    with pytest.raises(RefusedDestination) as private:
        check_host("10.0.0.5", allow_private=False)
    assert str(private.value) == (
        "destination 10.0.0.5 is a private address; set RELAY_ALLOW_PRIVATE_DESTINATIONS=true to allow it"
    )
    with pytest.raises(RefusedDestination) as never:
        check_host("169.254.169.254", allow_private=True)
    assert str(never.value) == "destination 169.254.169.254 is a link-local address; Relay never connects there"
    with pytest.raises(RefusedDestination, match="an unspecified address"):
        check_host("0.0.0.0", allow_private=True)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "010.0.0.1", "1.2.3.4.5", "::zz"])
def test_non_canonical_numeric_hosts_are_refused(host: str) -> None:
    # aiohttp treats these as IP literals (no resolver), and the OS would map some onto loopback.
    with pytest.raises(RefusedDestination, match="not a canonical IP address"):
        check_host(host, allow_private=True)


@pytest.mark.parametrize("host", ["hooks.example.com", "localhost", "xn--bcher-kva.de", "1a.example", ""])
def test_names_are_left_to_the_resolver(host: str) -> None:
    assert parse_literal(host) is None
    check_host(host, allow_private=False)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class _Answers(AbstractResolver):
    """What a DNS server answered: a fixed list per name."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=_family(a), proto=0, flags=0) for a in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_keeps_only_allowed_addresses() -> None:
    answers = _Answers(["10.1.2.3", "93.184.216.34", "169.254.169.254", "2606:4700::1111", "::1"])
    by_default = await GuardedResolver(allow_private=False, inner=answers).resolve("hooks.example.com", 443)
    assert [r["host"] for r in by_default] == ["93.184.216.34", "2606:4700::1111"]
    assert all(r["port"] == 443 for r in by_default)
    private = await GuardedResolver(allow_private=True, inner=answers).resolve("hooks.example.com", 443)
    assert [r["host"] for r in private] == ["10.1.2.3", "93.184.216.34", "2606:4700::1111", "::1"]


async def test_resolver_refuses_a_name_with_nothing_allowed_left() -> None:
    resolver = GuardedResolver(allow_private=False, inner=_Answers(["127.0.0.1", "::1"]))
    with pytest.raises(RefusedDestination) as loopback:
        await resolver.resolve("rebound.example.com", 443)
    # The kind of address, not the address: internal DNS answers stay with the operator.
    assert str(loopback.value) == (
        "destination rebound.example.com resolves only to loopback addresses; set RELAY_ALLOW_PRIVATE_DESTINATIONS=true to allow them"
    )
    assert refusal_of(loopback.value) == str(loopback.value)

    mixed = GuardedResolver(allow_private=True, inner=_Answers(["169.254.169.254", "0.0.0.0"]))
    with pytest.raises(RefusedDestination, match="only to link-local or unspecified addresses; Relay never connects there"):
        await mixed.resolve("metadata.example.com", 80)

    garbage = GuardedResolver(allow_private=True, inner=_Answers(["not-an-address"]))
    with pytest.raises(RefusedDestination, match="unparseable"):
        await garbage.resolve("odd.example.com", 80)


async def test_resolver_passes_resolution_errors_through_and_closes_its_inner() -> None:
    answers = _Answers([])
    resolver = GuardedResolver(allow_private=False, inner=answers)
    assert await resolver.resolve("empty.example.com") == []
    await resolver.close()
    assert answers.closed
    assert refusal_of(OSError("connection refused")) is None
    assert refusal_of(ValueError("bad url")) is None


@pytest.mark.parametrize(
    "url", ["https://169.254.169.254/x", "https://[fe80::1]/x", "https://[::ffff:169.254.169.254]/latest",
            "https://0.0.0.0/x", "https://[::]/x", "https://224.0.0.1/x", "https://2130706433/x", "https://127.1/x"],
)  # fmt: skip
def test_save_time_refuses_literals_that_never_receive_webhooks(url: str) -> None:
    with pytest.raises(RelayError) as info:
        validate_entry("webhook_url", url)
    assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.http_status == 400
    assert info.value.param == "config.webhook_url"


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x", "https://10.0.0.5/x", "https://[fd00::1]/x", "http://127.0.0.1:9000/h",
            "http://localhost:9000/h", "https://8.8.8.8/x", "https://metadata.internal/x"],
)  # fmt: skip
def test_save_time_leaves_private_literals_and_names_to_delivery(url: str) -> None:
    # Private literals depend on the operator's setting, names on DNS at delivery time.
    assert validate_entry("webhook_url", url) == url
