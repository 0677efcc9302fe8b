"""Typed settings: the only module that reads ``os.environ``.

Every value has a default that works for ``make up`` on a developer machine;
production deployments override them through the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_PREFIX = "RELAY_"
# Egress proxy variables keep their conventional names, in either case.
_CONVENTIONAL = frozenset({"https_proxy", "http_proxy", "no_proxy"})


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
    dashboard_port: int = 8090  # the web console's loopback port (Envoy serves it at /dashboard)
    workers: int = 1

    # Storage.  ``database_url`` is the owner role (migrations, workers, platform
    # operations); ``app_database_url`` is the non-owner role that tenant-scoped
    # queries run as, so row-level security applies to them.
    database_url: str = ""
    app_database_url: str = ""
    # Silo databases a tenant's data plane may live in: ``name=owner_dsn,...`` (docs/tenancy.md, "Placement").
    # Each silo's ``relay_app`` DSN reuses the pool's ``relay_app`` password (the role is per server).
    silo_databases: str = field(default="", repr=False)
    # `relay tenants move-to-silo`: who replicates.  Publisher: the pool, a role with REPLICATION that
    # row-level security does not confine (default: database_url); subscriber: the silo, a role that
    # may create subscriptions (default: the silo's DSN).
    silo_publisher_url: str = field(default="", repr=False)
    silo_subscriber_url: str = field(default="", repr=False)
    redis_url: str = field(default="", repr=False)  # may hold the data nodes' password (any URL form)
    db_pool_min: int = 1
    db_pool_max: int = 10
    # The DSNs go through a transaction-mode pooler (PgBouncer): no server-side prepared
    # statements, which would not survive the next transaction on another server connection.
    db_transaction_pooling: bool = False

    # Secrets
    admin_token: str = field(default="", repr=False)
    jwt_secret: str = field(default="", repr=False)
    master_key: str = field(default="", repr=False)
    test_key: str = field(default="", repr=False)  # the demo key `make up` saved, reused by seed-demo

    # Limits
    max_request_bytes: int = 32 * 1024 * 1024
    provider_timeout_s: float = 600.0
    # Test-mode streams pause this long between chunks (load and failure drills keep requests in flight).
    testmode_chunk_delay_s: float = 0.0
    # Envoy: a request's headers and body must arrive within this (a stalled upload → 408) ...
    envoy_request_timeout_s: int = 60
    # ... and a stream silent this long (either way, e.g. a provider that stopped) is cut.
    envoy_stream_idle_timeout_s: int = 600
    shutdown_grace_s: float = 10.0
    auth_cache_ttl_s: float = 5.0

    # Tenancy: keys, lifecycle, admin principals, background jobs
    auth_redis_ttl_s: int = 300  # the shared (Redis) key cache; purged on every change
    last_used_flush_s: float = 5.0  # api_keys.last_used_at is written in one batch this often
    key_rotation_grace_s: int = 86400  # the old secret keeps working this long after a rotation
    trial_days: int = 14
    suspended_grace_days: int = 30  # suspended this long → deleted
    expired_grace_days: int = 30  # trial expired this long → deleted
    deletion_retention_days: int = 30  # soft-deleted this long → every row removed
    provisioning_stuck_s: int = 300  # provisioning this long → the monitor re-queues it
    config_cache_ttl_s: int = 60
    jwt_issuer: str = "relay"
    background_jobs: bool = True  # run the job runner and lifecycle sweeps in this process
    jobs_poll_s: float = 1.0
    lifecycle_sweep_s: float = 30.0
    # Envoy hop(s), comma-separated addresses or CIDRs: only a connection from one of them
    # may name the caller in x-forwarded-for (audit IPs).  Empty: the peer address counts.
    trusted_proxies: str = ""
    # Where the `relay tenants|keys` commands connect (default: grpc_host:grpc_port).
    grpc_addr: str = ""

    # Metering: rate limits, spend caps, request log, rollups, billing (docs/metering.md)
    spend_cap_fail_closed: bool = True  # Redis unreachable: refuse requests of capped keys/tenants
    policy_cache_ttl_s: float = 5.0  # plan quotas, overrides, key caps and tenant config in memory
    reservation_input_margin: float = 0.10  # spend reservations over-estimate input tokens by this share
    usage_discrepancy_ratio: float = 1.5  # provider count above estimate × this (+ slack): bill the estimate
    usage_discrepancy_slack_tokens: int = 512
    request_log_batch: int = 500
    request_log_flush_s: float = 0.2
    spool_replay_s: float = 2.0
    metering_workers: bool = True  # run usage rollup, billing and webhook delivery loops in this process
    rollup_interval_s: float = 5.0
    billing_interval_s: float = 60.0
    billing_finalize_delay_s: int = 3600  # a month is finalized this long after it ends
    webhook_poll_s: float = 2.0
    webhook_max_attempts: int = 12
    webhook_signing_key: str = field(default="", repr=False)  # derives a tenant's secret without webhook_secret
    webhook_allow_private: bool = False  # the older name of allow_private_destinations (still honoured)
    noisy_share_threshold: float = 0.5  # share of all traffic in the last minute that flags a tenant
    noisy_min_requests: int = 600  # ... once the platform sees at least this many requests per minute
    noisy_limit_factor: float = 0.5  # flagged tenants' limits are multiplied by this
    noisy_duration_s: int = 300
    billing_url: str = "https://relay.lorbic.com/billing"  # the upgrade_url in limit and cap errors

    # Routing, failover, provider health and credentials (docs/providers.md)
    # Tenant-chosen destinations (webhook URLs, BYOK base URLs) may be loopback/private
    # addresses too (dev, the operator's own network); link-local and metadata never.
    allow_private_destinations: bool = False
    old_master_keys: str = field(default="", repr=False)  # retired master keys, comma-separated, for rotation
    credential_cache_ttl_s: float = 5.0  # a worker re-reads a tenant's provider credentials this often
    retry_backoff_s: float = 0.1  # first backoff between provider attempts (doubles each time)
    circuit_failure_threshold: int = 5  # consecutive provider failures that open its circuit
    circuit_cooldown_s: float = 30.0  # an open circuit lets one probe request through after this
    health_monitor: bool = True  # probe providers and record health events from this process
    health_probe_interval_s: float = 15.0
    provider_events_retention_days: int = 30  # circuit, burst, anomaly and status events are kept this long
    # Upstream HTTP (docs/providers.md): "native" (Relay's own client) or "aiohttp" (library-backed).
    upstream_http: str = "native"
    # Egress proxy: HTTPS_PROXY for https upstreams (CONNECT tunnel), HTTP_PROXY for http ones,
    # NO_PROXY exempts hosts.  Proxy URLs may carry credentials: never in repr or logs.
    https_proxy: str = field(default="", repr=False)
    http_proxy: str = field(default="", repr=False)
    no_proxy: str = ""

    # Observability (docs/observability.md)
    metrics_port: int = 9464  # Prometheus /metrics on its own plain-HTTP port (never through Envoy); 0 = off
    metrics_host: str = "127.0.0.1"
    metrics_sample_s: float = 5.0  # queue/spool depth, circuit states and gate counters are sampled this often
    # OpenTelemetry traces, read from the standard OTEL_* names too; no endpoint = tracing off.
    otel_exporter_otlp_endpoint: str = ""  # OTLP/HTTP base URL, e.g. http://collector:4318
    otel_exporter_otlp_headers: str = field(default="", repr=False)  # "k=v,k2=v2"
    otel_service_name: str = "relay"
    anomaly_z_threshold: float = 3.0  # provider error rate / latency this many deviations above its baseline
    anomaly_window_s: float = 60.0  # the current window, compared with the windows before it
    anomaly_baseline_s: float = 1800.0
    anomaly_min_samples: int = 20  # attempts a window needs before it counts

    # Request archival (docs/archival.md): months older than the retention window move to Parquet.
    archive_url: str = ""  # a directory or s3://bucket/prefix; empty = <state_dir>/archive
    archive_retention_days: int = 30  # requests stay in Postgres at least this long
    archive_interval_s: float = 3600.0
    archiver: bool = True  # run the archiver from this process's job runner

    # Files
    state_dir: Path = Path(".relay")
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            # DATABASE_URL / REDIS_URL and OpenTelemetry's OTEL_* follow common conventions without a prefix.
            for name in (_PREFIX + f.name.upper(), f.name.upper(), f.name):
                if name in env and (
                    name.startswith(_PREFIX)
                    or f.name in _CONVENTIONAL
                    or (name.isupper() and (f.name.endswith("_url") or f.name.startswith("otel_")))
                ):
                    values[f.name] = _coerce(f.type, env[name])
                    break
        values.update(overrides)
        return cls(**values)

    @property
    def archive_location(self) -> str:
        return self.archive_url or str(self.state_dir / "archive")

    @property
    def private_destinations_allowed(self) -> bool:
        return self.allow_private_destinations or self.webhook_allow_private

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"
