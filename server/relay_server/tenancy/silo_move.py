"""``relay tenants move-to-silo TENANT --silo NAME``: a tenant's data plane
moves from the pool to a silo database while its traffic continues.

The procedure (docs/tenancy.md, "Moving a tenant to a silo"):

1. Prepare the silo: migrations, then its data-plane tables lose their foreign
   keys to the control plane (which stays in the pool).
2. Replicate: publications filtered to the tenant on the pool, a logical slot,
   a subscription on the silo that copies the existing rows and then streams.
3. Catch up: the copy is done and the slot's lag is small.
4. Write pause: ``write_paused_until`` in the tenant's configuration, pushed to
   every worker by the invalidation bus; the tenant's requests get 503
   ``tenant_moving`` with ``Retry-After: 1``.  The entry expires by itself, so a
   mover that dies cannot leave the tenant paused.
5. Final delta and verification: row counts and checksums of every moved
   table agree between pool and silo (requests admitted before the pause
   finish and are replicated meanwhile).  Not within the pause budget: the
   pause is lifted, replication stays, and the move can be run again.
6. Switch and release in one commit: ``data_placement = silo:NAME`` and the
   pause removed, then a bus broadcast; every new write lands in the silo.
7. Finish: the subscription confirms the pool's WAL position after the switch
   (a row written to the pool by a request that resolved its placement just
   before the switch still arrives), then subscription, slot and publications
   are dropped; with ``purge_pool`` the tenant's pool rows are deleted.

Each step is idempotent and the state lives in the databases themselves
(placement, publication, slot, subscription), so an interrupted move resumes
by running the command again.  Every phase is audited in the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from relay_server.storage.postgres import replication as rep
from relay_server.storage.postgres.audit import AuditEntry, insert_audit
from relay_server.storage.postgres.migrate import apply_migrations
from relay_server.storage.postgres.silos import PAUSE_KEY, PLACEMENT_KEY, placement_value, silo_of

log = logging.getLogger(__name__)

Publish = Callable[[str], Awaitable[object]]  # tenant_id → broadcast a ``tenant`` change, wait for acks


class MoveError(RuntimeError):
    """The move stopped; what was done stays, and running it again resumes."""


@dataclass(frozen=True)
class MoveConfig:
    tenant_id: str
    silo: str
    pool_dsn: str = field(repr=False)  # the pool's owner
    silo_dsn: str = field(repr=False)  # the silo's owner
    publisher_dsn: str = field(repr=False)  # pool, a role with REPLICATION that RLS does not confine
    subscriber_dsn: str = field(repr=False)  # silo, a role that may create subscriptions (superuser)
    pause_s: float = 5.0  # the longest write pause
    catchup_timeout_s: float = 300.0
    max_lag_bytes: int = 1 << 20  # the pause starts once the slot is this close
    settle_s: float = 1.0  # after the switch: writes that resolved the old placement commit
    purge_pool: bool = False
    actor: str = "relay-cli"


@dataclass
class MoveReport:
    tenant_id: str
    silo: str
    resumed_after_switch: bool = False
    pause_s: float = 0.0
    sums: dict[str, rep.TableSum] = field(default_factory=dict)
    dropped_foreign_keys: list[str] = field(default_factory=list)
    purged_pool: bool = False


async def _connect(dsn: str) -> AsyncConnection[Any]:
    return await AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)


class SiloMove:
    def __init__(self, config: MoveConfig, publish: Publish, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = config
        self._publish = publish
        self._clock = clock
        self.names = rep.Names.for_tenant(config.tenant_id)

    async def run(self) -> MoveReport:
        cfg = self.cfg
        report = MoveReport(cfg.tenant_id, cfg.silo)
        pool = await _connect(cfg.pool_dsn)
        try:
            # One mover per tenant, across hosts: a session lock held for the whole move.
            locked = await (
                await pool.execute("SELECT pg_try_advisory_lock(hashtext('relay_silo_move'), hashtext(%s)) AS ok", (cfg.tenant_id,))
            ).fetchone()
            if not locked or not locked["ok"]:
                raise MoveError(f"another move of tenant {cfg.tenant_id} is running")
            current = await self._placement(pool)
            if current == cfg.silo:
                report.resumed_after_switch = True
                log.info("tenant already switched to the silo; finishing the move", extra={"tenant_id": cfg.tenant_id})
            elif current is not None:
                raise MoveError(f"tenant {cfg.tenant_id} lives in silo `{current}`; only moves out of the pool are supported")
            else:
                await self._audit(pool, "tenant.silo_move_started", {"silo": cfg.silo})
                await self._replicate(pool, report)
                await self._wait_caught_up(pool)
                await self._pause_verify_switch(pool, report)
            await self._finish(pool, report)
            await self._audit(pool, "tenant.silo_move_finished", self._audit_sums(report) | {"purged_pool": report.purged_pool})
            return report
        except MoveError as exc:
            await self._audit(pool, "tenant.silo_move_failed", {"silo": cfg.silo, "error": str(exc)})
            raise
        finally:
            await pool.close()

    # --- steps ------------------------------------------------------------------------

    async def _replicate(self, pool: AsyncConnection[Any], report: MoveReport) -> None:
        cfg = self.cfg
        await asyncio.to_thread(apply_migrations, cfg.silo_dsn)
        silo = await _connect(cfg.silo_dsn)
        try:
            report.dropped_foreign_keys = await rep.drop_control_plane_references(silo)
        finally:
            await silo.close()
        await rep.ensure_publications(pool, self.names, cfg.tenant_id)
        publisher = await _connect(cfg.publisher_dsn)
        try:
            await rep.ensure_slot(publisher, self.names)
        finally:
            await publisher.close()
        sub = await _connect(cfg.subscriber_dsn)
        try:
            if not await rep.subscription_exists(sub, self.names):
                # Rows left by an earlier attempt would collide with the fresh copy; the silo is
                # not authoritative for this tenant until the switch, so they can go.
                await rep.delete_tenant_rows(sub, cfg.tenant_id)
                await rep.create_subscription(sub, self.names, cfg.publisher_dsn)
        finally:
            await sub.close()

    async def _wait_caught_up(self, pool: AsyncConnection[Any]) -> None:
        deadline = self._clock() + self.cfg.catchup_timeout_s
        sub = await _connect(self.cfg.subscriber_dsn)
        try:
            while True:
                copied = await rep.initial_copy_done(sub, self.names)
                lag = await rep.slot_lag_bytes(pool, self.names)
                if copied and lag is not None and lag <= self.cfg.max_lag_bytes:
                    return
                if self._clock() > deadline:
                    raise MoveError(f"the silo did not catch up in {self.cfg.catchup_timeout_s:.0f} s (copied={copied}, lag={lag})")
                await asyncio.sleep(0.2)
        finally:
            await sub.close()

    async def _pause_verify_switch(self, pool: AsyncConnection[Any], report: MoveReport) -> None:
        cfg = self.cfg
        until = datetime.now(UTC) + timedelta(seconds=cfg.pause_s + 1)
        async with pool.transaction():
            await _set_config(pool, cfg.tenant_id, PAUSE_KEY, until.isoformat())
            await insert_audit(pool, self._entry("tenant.write_paused", {"until": until.isoformat(), "silo": cfg.silo}))
        started = self._clock()
        await self._publish(cfg.tenant_id)
        silo = await _connect(cfg.silo_dsn)
        try:
            sums = await self._converge(pool, silo, started + cfg.pause_s)
        except MoveError:
            await self._release(pool)
            raise
        finally:
            await silo.close()
        report.sums = sums
        async with pool.transaction():
            await _set_config(pool, cfg.tenant_id, PLACEMENT_KEY, placement_value(cfg.silo))
            await pool.execute("DELETE FROM tenant_config WHERE tenant_id = %s AND key = %s", (cfg.tenant_id, PAUSE_KEY))
            await insert_audit(pool, self._entry("tenant.placement_changed", {"from": "pool", "to": placement_value(cfg.silo)} | self._audit_sums(report)))
        await self._publish(cfg.tenant_id)
        report.pause_s = self._clock() - started
        log.info("tenant switched to its silo", extra={"tenant_id": cfg.tenant_id, "pause_s": round(report.pause_s, 3)})

    async def _converge(self, pool: AsyncConnection[Any], silo: AsyncConnection[Any], deadline: float) -> dict[str, rep.TableSum]:
        """The final delta: wait until every moved table agrees (count and checksum) on both sides."""
        while True:
            want = await rep.table_sums(pool, self.cfg.tenant_id)
            have = await rep.table_sums(silo, self.cfg.tenant_id)
            if want == have:
                return want
            if self._clock() > deadline:
                differ = sorted(t for t in want if want[t] != have.get(t))
                raise MoveError(f"pool and silo still differ after the {self.cfg.pause_s:.1f} s write pause: {differ}; the pause is lifted, run the move again")
            await asyncio.sleep(0.05)

    async def _release(self, pool: AsyncConnection[Any]) -> None:
        async with pool.transaction():
            await pool.execute("DELETE FROM tenant_config WHERE tenant_id = %s AND key = %s", (self.cfg.tenant_id, PAUSE_KEY))
            await insert_audit(pool, self._entry("tenant.write_resumed", {"silo": self.cfg.silo, "switched": False}))
        await self._publish(self.cfg.tenant_id)

    async def _finish(self, pool: AsyncConnection[Any], report: MoveReport) -> None:
        cfg = self.cfg
        await asyncio.sleep(cfg.settle_s)
        sub = await _connect(cfg.subscriber_dsn)
        try:
            if await rep.subscription_exists(sub, self.names):
                lsn = await rep.current_lsn(pool)
                deadline = self._clock() + cfg.catchup_timeout_s
                while not await rep.slot_confirmed(pool, self.names, lsn):
                    if self._clock() > deadline:
                        raise MoveError("the silo did not confirm the pool's last writes; replication is kept, run the move again")
                    await asyncio.sleep(0.2)
                await self._check_nothing_left(pool, report)
            await rep.drop_subscription(sub, self.names)
        finally:
            await sub.close()
        publisher = await _connect(cfg.publisher_dsn)  # only a REPLICATION role may drop the slot
        try:
            for attempt in range(50):  # the walsender of the dropped subscription lets go of the slot shortly
                try:
                    await rep.drop_slot(publisher, self.names)
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await publisher.close()
        await rep.drop_publications(pool, self.names)
        if cfg.purge_pool:
            await rep.delete_tenant_rows(pool, cfg.tenant_id)
            report.purged_pool = True

    async def _check_nothing_left(self, pool: AsyncConnection[Any], report: MoveReport) -> None:
        """Every pool row of the tenant reached the silo (the silo may hold more: new traffic)."""
        silo = await _connect(self.cfg.silo_dsn)
        try:
            have = await rep.table_sums(silo, self.cfg.tenant_id)
        finally:
            await silo.close()
        left = await rep.table_sums(pool, self.cfg.tenant_id)
        if report.sums and left["requests"] != report.sums["requests"]:
            log.warning("request rows reached the pool after verification; replicated before cleanup",
                        extra={"tenant_id": self.cfg.tenant_id, "rows": left["requests"].rows - report.sums["requests"].rows})  # fmt: skip
        if left["requests"].rows > have["requests"].rows:
            raise MoveError("the silo holds fewer request rows than the pool; replication is kept, run the move again")
        if not report.sums:
            report.sums = left

    # --- helpers ----------------------------------------------------------------------

    async def _placement(self, pool: AsyncConnection[Any]) -> str | None:
        row = await (await pool.execute("SELECT id FROM tenants WHERE id = %s", (self.cfg.tenant_id,))).fetchone()
        if row is None:
            raise MoveError(f"tenant {self.cfg.tenant_id} does not exist")
        row = await (
            await pool.execute("SELECT value FROM tenant_config WHERE tenant_id = %s AND key = %s", (self.cfg.tenant_id, PLACEMENT_KEY))
        ).fetchone()
        return silo_of(row["value"]) if row else None

    def _entry(self, action: str, metadata: dict[str, Any]) -> AuditEntry:
        return AuditEntry(
            tenant_id=self.cfg.tenant_id, actor_id=self.cfg.actor, actor_type="platform_admin", action=action,
            resource_type="tenant", resource_id=self.cfg.tenant_id, metadata=metadata,
        )  # fmt: skip

    async def _audit(self, pool: AsyncConnection[Any], action: str, metadata: dict[str, Any]) -> None:
        async with pool.transaction():
            await insert_audit(pool, self._entry(action, metadata))

    @staticmethod
    def _audit_sums(report: MoveReport) -> dict[str, Any]:
        return {"silo": report.silo, "tables": {t: {"rows": s.rows, "checksum": s.checksum} for t, s in report.sums.items()}}


async def _set_config(conn: AsyncConnection[Any], tenant_id: str, key: str, value: str | None) -> None:
    await conn.execute(
        """INSERT INTO tenant_config (tenant_id, key, value) VALUES (%s, %s, %s)
           ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value""",
        (tenant_id, key, value),
    )


async def move_with_settings(settings: Any, tenant_id: str, silo: str, **options: Any) -> MoveReport:
    """The command's entry point: DSNs from settings, the invalidation bus over the server's Redis."""

    from relay_server.storage.postgres.pool import Database  # noqa: PLC0415
    from relay_server.storage.postgres.silos import parse_silo_databases  # noqa: PLC0415
    from relay_server.storage.redis.client import create_redis  # noqa: PLC0415
    from relay_server.tenancy.auth_cache import RedisKeyCache  # noqa: PLC0415
    from relay_server.tenancy.policy_bus import PolicyBus  # noqa: PLC0415

    silos = parse_silo_databases(settings.silo_databases)
    if silo not in silos:
        raise MoveError(f"silo `{silo}` is not in RELAY_SILO_DATABASES ({', '.join(sorted(silos)) or 'none configured'})")
    if not settings.redis_url:
        # Without the bus the servers would see the pause and the switch only when their caches expire.
        raise MoveError("moving a tenant needs RELAY_REDIS_URL: the pause and the switch reach every worker through it")
    config = MoveConfig(
        tenant_id=tenant_id, silo=silo, pool_dsn=settings.database_url, silo_dsn=silos[silo],
        publisher_dsn=settings.silo_publisher_url or settings.database_url,
        subscriber_dsn=settings.silo_subscriber_url or silos[silo], **options,
    )  # fmt: skip
    db = Database.from_settings(settings)
    await db.open()
    # Any REDIS_URL form (one Redis, a cluster, Sentinel); a command, not a request: patient timeouts.
    redis = create_redis(settings.redis_url, timeout_s=5.0)
    try:
        bus = PolicyBus(db, key_cache=RedisKeyCache(redis, ttl_s=settings.auth_redis_ttl_s), redis=redis)
        return await SiloMove(config, bus.tenant_changed).run()
    finally:
        await redis.aclose()
        await db.close()
