"""Egress proxy settings: which upstreams go through the proxy (NO_PROXY),
how the proxy URL and its credentials are read, and what reaches the wire."""

from __future__ import annotations

import pytest

from relay_server.providers.http_message import encode_request, parse_target
from relay_server.providers.http_proxy import Proxy, ProxyRoutes, connect_head, parse_proxy
from relay_server.settings import Settings

PROXY = Proxy("proxy.corp", 3128)


@pytest.mark.parametrize(("no_proxy", "scheme", "host", "port", "proxied"), [
    ("", "https", "api.openai.com", 443, True),
    ("*", "https", "api.openai.com", 443, False),
    ("openai.com", "https", "api.openai.com", 443, False),  # a name covers its subdomains
    ("openai.com", "https", "openai.com", 443, False),
    ("openai.com", "https", "notopenai.com", 443, True),  # ... not names that merely end alike
    (".openai.com", "https", "openai.com", 443, True),  # a leading dot: subdomains only
    (".openai.com", "https", "api.openai.com", 443, False),
    ("*.openai.com", "https", "api.openai.com", 443, False),
    (" Example.COM , localhost", "http", "localhost", 80, False),
    ("10.0.0.7", "http", "10.0.0.7", 80, False),  # IP addresses
    ("10.0.0.0/8", "http", "10.1.2.3", 8000, False),  # CIDR ranges
    ("10.0.0.0/8", "http", "11.1.2.3", 8000, True),
    (".0.0.1", "http", "127.0.0.1", 80, True),  # an address never matches a domain suffix
    ("vllm.internal:8000", "http", "vllm.internal", 8000, False),  # host:port
    ("vllm.internal:8000", "http", "vllm.internal", 8001, True),
    ("[::1]:8080", "http", "::1", 8080, False),
    ("::1", "http", "::1", 9, False),
], ids=repr)  # fmt: skip
def test_no_proxy(no_proxy: str, scheme: str, host: str, port: int, proxied: bool) -> None:
    routes = ProxyRoutes(https=PROXY, http=PROXY, no_proxy=no_proxy)
    assert (routes.for_upstream(scheme, host, port) is PROXY) is proxied


def test_each_scheme_has_its_own_proxy() -> None:
    routes = ProxyRoutes(https=PROXY)
    assert routes.for_upstream("https", "a.example", 443) is PROXY
    assert routes.for_upstream("http", "a.example", 80) is None
    assert not ProxyRoutes(https=PROXY, no_proxy="*").configured and not ProxyRoutes().configured


def test_proxy_urls_and_credentials() -> None:
    proxy = parse_proxy("http://al%40ice:p%3Ass@proxy.corp:3128", "HTTPS_PROXY")
    assert proxy is not None and (proxy.host, proxy.port, proxy.url) == ("proxy.corp", 3128, "http://proxy.corp:3128")
    assert proxy.authorization == "Basic YWxAaWNlOnA6c3M="  # al@ice:p:ss
    assert "p:ss" not in repr(proxy) and "YWxA" not in repr(proxy)
    assert parse_proxy("proxy.corp:8080", "HTTP_PROXY") == Proxy("proxy.corp", 8080)
    assert parse_proxy("", "HTTP_PROXY") is None
    with pytest.raises(ValueError, match="HTTPS_PROXY must be an http://") as info:
        parse_proxy("https://user:secret@proxy.corp", "HTTPS_PROXY")
    assert "secret" not in str(info.value)


def test_settings_read_the_conventional_names_and_hide_credentials() -> None:
    settings = Settings.from_env({"https_proxy": "http://u:pw@p:1", "HTTP_PROXY": "http://p:2", "NO_PROXY": "localhost",
                                  "RELAY_UPSTREAM_HTTP": "aiohttp", "grpc_host": "0.0.0.0"})  # fmt: skip
    assert (settings.https_proxy, settings.http_proxy, settings.no_proxy) == ("http://u:pw@p:1", "http://p:2", "localhost")
    assert settings.upstream_http == "aiohttp" and settings.grpc_host == "127.0.0.1", "only the proxy names go without prefix"
    assert "pw" not in repr(settings)


def test_what_goes_on_the_wire() -> None:
    secret = Proxy("p", 1, "Basic dTpw")
    assert connect_head(secret, "api.openai.com", 443) == (
        b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n")
    assert connect_head(PROXY, "::1", 8443).startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\n")
    routes = ProxyRoutes(https=secret, http=secret)
    plain = parse_target("http://vllm:8000/v1/chat?x=1", routes)
    head = encode_request("POST", plain, {"Authorization": "Bearer k"}, b"{}")
    assert head.startswith(b"POST http://vllm:8000/v1/chat?x=1 HTTP/1.1\r\nHost: vllm:8000\r\nProxy-Authorization: Basic dTpw\r\n")
    assert plain.log_path == "/v1/chat" and plain.key == ("http", "vllm", 8000, secret)
    tls = parse_target("https://api.openai.com/v1/chat", routes)
    assert encode_request("GET", tls, {}, None).startswith(b"GET /v1/chat HTTP/1.1\r\nHost: api.openai.com\r\nUser-Agent")
    assert parse_target("https://api.openai.com/v1/chat").key == ("https", "api.openai.com", 443, None)
    with pytest.raises(ValueError, match="CR or LF"):
        encode_request("POST", plain, {"X": "a\r\nB: c"}, b"{}")
