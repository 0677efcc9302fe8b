"""Typed settings: the only module that reads ``os.environ``.

Every value has a default that works for ``make up`` on a developer machine;
production deployments override them through the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

_PREFIX = "RELAY_"


def _coerce(kind: Any, raw: str) -> Any:
    if kind in (bool, "bool"):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in (Path, "Path"):
        return Path(raw)
    return raw


@dataclass(frozen=True)
class Settings:
    # Network
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    envoy_admin_port: int = 9901
    workers: int = 1

    # Storage.  ``database_url`` is the owner role (migrations, workers, platform
    # operations); ``app_database_url`` is the non-owner role that tenant-scoped
    # queries run as, so row-level security applies to them.
    database_url: str = ""
    app_database_url: str = ""
    redis_url: str = ""
    db_pool_min: int = 1
    db_pool_max: int = 10

    # Secrets
    admin_token: str = field(default="", repr=False)
    jwt_secret: str = field(default="", repr=False)
    master_key: str = field(default="", repr=False)
    test_key: str = field(default="", repr=False)  # the demo key `make up` saved, reused by seed-demo

    # Limits
    max_request_bytes: int = 32 * 1024 * 1024
    provider_timeout_s: float = 600.0
    shutdown_grace_s: float = 10.0
    auth_cache_ttl_s: float = 5.0

    # Files
    state_dir: Path = Path(".relay")
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            # DATABASE_URL / REDIS_URL follow the common convention without a prefix.
            for name in (_PREFIX + f.name.upper(), f.name.upper()):
                if name in env and (name.startswith(_PREFIX) or f.name.endswith("_url")):
                    values[f.name] = _coerce(f.type, env[name])
                    break
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **overrides)

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"
