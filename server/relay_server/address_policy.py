"""Which network addresses Relay may connect to on a tenant's behalf.

Tenants choose some URLs Relay's servers then fetch (webhook destinations,
BYOK provider base URLs), so without a guard Relay would connect wherever
those URLs lead: the cloud metadata service, Envoy's admin port, Postgres,
Redis, anything on the operator's private network.  One policy, used by the
webhook sender and by the provider HTTP client, at save time and again at
connect time (DNS can be re-pointed at any time):

* Never: unspecified, link-local (where metadata services live), multicast,
  reserved and documentation ranges, and the known cloud metadata addresses
  that sit outside link-local.
* Loopback and private networks (RFC 1918, fc00::/7, 100.64/10 CGNAT, ...)
  only when the operator allows private destinations
  (``RELAY_ALLOW_PRIVATE_DESTINATIONS``, or the older
  ``RELAY_WEBHOOK_ALLOW_PRIVATE``: local development, the operator's own network).
* Numeric hosts that are no canonical address (``127.1``, ``0x7f000001``,
  ``2852039166``, ``0177.0.0.1``) are refused outright.

IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64
``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by that IPv4 address, since
that is what a connection to them can reach.

A leaf module (standard library only), so every layer may use it.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple

ALLOW_PRIVATE_ENV = "RELAY_ALLOW_PRIVATE_DESTINATIONS"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(NamedTuple):
    label: str  # what kind of address it is: "loopback", "link-local", ...
    always: bool  # True: refused whatever the settings say

    @property
    def noun(self) -> str:
        return f"{'an' if self.label[0] in 'aeiou' else 'a'} {self.label} address"


_NEVER, _PRIVATE = True, False
# First match wins, so narrow entries come before the ranges that contain them.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, Refused], ...] = tuple(
    (ipaddress.IPv4Network(net), Refused(label, always))
    for net, label, always in (
        ("100.100.100.200/32", "cloud metadata", _NEVER),  # Alibaba Cloud's, inside 100.64/10
        ("0.0.0.0/8", "unspecified", _NEVER),  # Linux connects 0.0.0.0 to the local host
        ("169.254.0.0/16", "link-local", _NEVER),
        ("224.0.0.0/4", "multicast", _NEVER),
        ("240.0.0.0/4", "reserved", _NEVER),  # includes 255.255.255.255
        ("192.0.2.0/24", "documentation", _NEVER),
        ("198.51.100.0/24", "documentation", _NEVER),
        ("203.0.113.0/24", "documentation", _NEVER),
        ("127.0.0.0/8", "loopback", _PRIVATE),
        ("10.0.0.0/8", "private", _PRIVATE),
        ("172.16.0.0/12", "private", _PRIVATE),
        ("192.168.0.0/16", "private", _PRIVATE),
        ("100.64.0.0/10", "shared (CGNAT)", _PRIVATE),
        ("198.18.0.0/15", "benchmarking", _PRIVATE),
    )
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, Refused], ...] = tuple(
    (ipaddress.IPv6Network(net), Refused(label, always))
    for net, label, always in (
        ("::/128", "unspecified", _NEVER),
        ("::1/128", "loopback", _PRIVATE),
        ("fd00:ec2::254/128", "cloud metadata", _NEVER),  # AWS's IPv6 endpoint, inside fc00::/7
        ("::/8", "reserved", _NEVER),  # the deprecated IPv4-compatible ::a.b.c.d among them
        ("100::/64", "reserved", _NEVER),  # discard-only
        ("2001::/32", "reserved", _NEVER),  # Teredo: the IPv4 peer inside is obfuscated, so refuse it whole
        ("2001:db8::/32", "documentation", _NEVER),
        ("fe80::/10", "link-local", _NEVER),
        ("ff00::/8", "multicast", _NEVER),
        ("fc00::/7", "private", _PRIVATE),
        ("fec0::/10", "private", _PRIVATE),  # deprecated site-local, still routed inside some networks
        ("64:ff9b:1::/48", "private", _PRIVATE),  # local-use NAT64
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedDestination(OSError):
    """A destination the rules refuse.  An ``OSError``, so connection code (aiohttp's
    resolver, the provider client's dial) reports it as a failed connection."""


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches (mapped, NAT64, 6to4)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def classify(address: IPAddress) -> Refused | None:
    """Why ``address`` may be refused (see ``Refused.always``), or None for a public address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return classify(inner)
    rules = _V4_RULES if isinstance(address, ipaddress.IPv4Address) else _V6_RULES
    return next((verdict for network, verdict in rules if address in network), None)


def looks_like_ip(host: str) -> bool:
    """Whether ``host`` is (or could be read as) an IP address rather than a name.

    aiohttp's own test (digits and dots, or a colon), plus every string the C
    resolver reads as IPv4 (``inet_aton``: ``0x7f000001``, ``127.1``,
    ``2852039166``, ``0177.0.0.1``), which a connection would reach as one.
    """
    if ":" in host or (bool(host) and host.replace(".", "").isdigit()):
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def parse_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal, None for a name.

    Raises ``RefusedDestination`` for numeric hosts that are no canonical address
    (``127.1``, ``2130706433``, ``0177.0.0.1``, ``0x7f000001``): legacy forms that
    hide where they lead.
    """
    if not looks_like_ip(host):
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise RefusedDestination(f"destination {host} is not a canonical IP address") from None


def _why(shown: str, verdict: Refused) -> str:
    if verdict.always:
        return f"destination {shown} is {verdict.noun}; Relay never connects there"
    return f"destination {shown} is {verdict.noun}; set {ALLOW_PRIVATE_ENV}=true to allow it"


def _allowed(verdict: Refused | None, allow_private: bool) -> bool:
    return verdict is None or (allow_private and not verdict.always)


def check_host(host: str, *, allow_private: bool) -> None:
    """Refuse an IP-literal ``host`` the rules forbid (``RefusedDestination``); names
    pass here and are judged when a connection resolves them."""
    address = parse_literal(host)
    if address is None:
        return
    verdict = classify(address)
    if not _allowed(verdict, allow_private):
        assert verdict is not None
        raise RefusedDestination(_why(host, verdict))


def allowed_addresses(addresses: list[str], *, allow_private: bool) -> tuple[list[str], dict[str, Refused]]:
    """Split resolved ``addresses`` into those the rules allow and the refused ones (with why)."""
    allowed: list[str] = []
    refused: dict[str, Refused] = {}
    for text in addresses:
        try:
            verdict = classify(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:  # a resolver answer that is no address: fail closed
            verdict = Refused("unparseable", _NEVER)
        if _allowed(verdict, allow_private):
            allowed.append(text)
        else:
            assert verdict is not None
            refused[text] = verdict
    return allowed, refused


def refused_message(host: str, refused: dict[str, Refused]) -> str:
    """Why a name that resolved only to refused addresses is refused (kinds only, never the addresses)."""
    labels = " or ".join(sorted({v.label for v in refused.values()}))
    if any(v.always for v in refused.values()):
        hint = "Relay never connects there"
    else:
        hint = f"set {ALLOW_PRIVATE_ENV}=true to allow them"
    return f"destination {host} resolves only to {labels} addresses; {hint}"
