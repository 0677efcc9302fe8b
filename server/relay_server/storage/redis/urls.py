"""The Redis URL forms that name more than one server, parsed in one place.

* ``redis+cluster://[user:secret@]h1:p1,h2:p2`` (``rediss+cluster://`` for TLS):
  a Redis Cluster; any reachable node is a seed.
* ``redis+sentinel://[user:secret@]s1:26379,s2:26379/<master-name>[/db]``
  (``rediss+sentinel://`` for TLS): a master and its replicas watched by Redis
  Sentinel.  The hosts are the sentinels (port 26379 when omitted), the path
  names the master as the sentinels know it and optionally a database number.
  The credentials and TLS are the data nodes' (master and replicas); the
  sentinels are asked without credentials, over plain TCP or TLS alike.

A single Redis (``redis://``, ``rediss://``, ``unix://``) is parsed by redis-py
and by ``wire.Endpoint``.  Errors are ``ValueError``s that never quote the URL,
so a password cannot reach a log line through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
SENTINEL_PORT = 26379
SENTINEL_FORM = "redis+sentinel://[user:secret@]host:26379,host:26379/<master-name>[/db]"
Addr = tuple[str, int]
# How often a Sentinel client asks the sentinels again while its connection looks healthy: after
# ``SENTINEL FAILOVER`` the old master answers as a master until Sentinel demotes it (up to ~10 s).
RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    seeds: tuple[Addr, ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    sentinels: tuple[Addr, ...]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_cluster_url(url: str) -> bool:
    return _scheme(url) in CLUSTER_SCHEMES


def is_sentinel_url(url: str) -> bool:
    return _scheme(url) in SENTINEL_SCHEMES


def _userinfo(rest: str) -> tuple[str, str]:
    """``user:secret`` and what follows the last ``@``: a secret with an unescaped ``/`` or ``?``
    still ends up whole in the credentials, never in an error message about the hosts."""
    userinfo, _, after = rest.rpartition("@")
    return userinfo, after


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, _, secret = userinfo.partition(":")
    return (unquote(user) or None), (unquote(secret) if secret else None)


def _hosts(hosts: str, default_port: int, what: str) -> tuple[Addr, ...]:
    """``h1:p1,h2,[::1]:p3`` as (host, port) pairs; a bad port is named, never the whole URL."""
    out: list[Addr] = []
    for raw in hosts.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6] or [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, colon, port_text = item.rpartition(":")
            if not colon:
                host, port_text = item, ""
        if not host:
            raise ValueError(f"{what} address {item!r} has no host")
        if not port_text:
            out.append((host, default_port))
            continue
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{what} address {item!r} has a bad port (a number from 1 to 65535)")
        out.append((host, int(port_text)))
    return tuple(out)


def parse_cluster_url(url: str) -> ClusterUrl:
    scheme = _scheme(url)
    if scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL (scheme {scheme!r})")
    userinfo, rest = _userinfo(url.split("://", 1)[1])
    hosts = rest.split("/", 1)[0].split("?", 1)[0]
    seeds = _hosts(hosts, 6379, "a Redis Cluster node")
    if not seeds:
        raise ValueError("a Redis Cluster URL needs at least one host:port")
    return ClusterUrl(seeds, CLUSTER_SCHEMES[scheme], *_credentials(userinfo))


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``redis+sentinel://[user:secret@]s1:26379,s2:26379/<master-name>[/db]`` → ``SentinelUrl``."""
    scheme = _scheme(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Redis Sentinel URL (scheme {scheme!r}); the form is {SENTINEL_FORM}")
    userinfo, rest = _userinfo(url.split("://", 1)[1])
    if "?" in rest or "#" in rest:
        raise ValueError(f"a Redis Sentinel URL takes no query or fragment; the form is {SENTINEL_FORM}")
    hosts, _, path = rest.partition("/")
    sentinels = _hosts(hosts, SENTINEL_PORT, "a Redis Sentinel")
    if not sentinels:
        raise ValueError(f"a Redis Sentinel URL needs at least one sentinel host[:port]; the form is {SENTINEL_FORM}")
    parts = path.rstrip("/").split("/") if path.strip("/") else []
    if not parts or not parts[0]:
        raise ValueError(f"a Redis Sentinel URL names the master after the hosts; the form is {SENTINEL_FORM}")
    if len(parts) > 2:
        raise ValueError(f"a Redis Sentinel URL's path is <master-name>[/db]; the form is {SENTINEL_FORM}")
    db_text = parts[1] if len(parts) == 2 else "0"
    if not db_text.isdigit():
        raise ValueError(f"the database of a Redis Sentinel URL is a number, not {db_text!r}")
    return SentinelUrl(sentinels, unquote(parts[0]), int(db_text), SENTINEL_SCHEMES[scheme], *_credentials(userinfo))


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` saying what is wrong with a ``REDIS_URL`` (before anything connects)."""
    scheme = _scheme(url)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
    elif scheme in CLUSTER_SCHEMES:
        parse_cluster_url(url)
    elif scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix://, "
            f"redis+cluster://h1:p1,h2:p2 or {SENTINEL_FORM}"
        )
