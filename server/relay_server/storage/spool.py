"""A durable local spool: append-only JSON-lines segments, replayed later.

Used when Postgres cannot take writes.  Each ``append`` writes its records
and fsyncs before returning, so a batch the caller handed over survives a
crash of this process or the machine.  Files in ``directory``::

    {name}-{pid}-{seq}.open               being appended to by process pid
    {name}-{pid}-{seq}.jsonl              closed, waiting for replay
    {name}-{pid}-{seq}.jsonl.claimed-{p}  being replayed by process p
    {name}.dead                           rows Postgres refused even repaired
    {name}.dead.claimed-{p}               dead letters being replayed (``relay spool replay``)

Rows hold tenants' request metadata: the directory is 0700 and every file
0600, whatever the umask.

Several processes may share the directory: each appends to its own segment,
claims closed segments by an atomic rename, and takes over the files of
processes that died (their ``.open`` and ``.claimed-`` files).  A replayed
segment is deleted only after its records were written, and replays must be
idempotent (the request log inserts with ON CONFLICT DO NOTHING), so a crash
in the middle of a replay costs a second replay, never a lost record.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import orjson

from relay_server.pids import pid_exists

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<name>[a-z_]+)-(?P<pid>\d+)-(?P<seq>\d+)\.(?P<state>open|jsonl)(?:\.claimed-(?P<owner>\d+))?$")


def _append_private(path: Path, data: bytes) -> None:
    """Append and fsync; a new file is created 0600 (os.open's mode is applied only on creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Blocking file operations: call them from a worker thread (``asyncio.to_thread``)."""

    def __init__(self, directory: Path, name: str = "requests") -> None:
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError("spool names are lowercase letters and underscores")
        self.directory = Path(directory)
        self.name = name
        self._pid = os.getpid()
        self._seq = itertools.count(1)
        self._current: Path | None = None
        self._lock = threading.Lock()

    # --- writing ---------------------------------------------------------------

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records as one batch; durable (fsync'd) when this returns."""
        if not records:
            return
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with self._lock:
            if self._current is None:
                _private_dir(self.directory)  # only once there is something to keep
                self._current = self.directory / f"{self.name}-{self._pid}-{next(self._seq)}.open"
                created = True
            else:
                created = False
            _append_private(self._current, data)
            if created:
                _fsync_dir(self.directory)

    def close_segment(self) -> None:
        """Close the segment being written, making it claimable for replay."""
        with self._lock:
            current, self._current = self._current, None
        if current is not None and current.exists():
            os.rename(current, current.with_suffix(".jsonl"))
            _fsync_dir(self.directory)

    # --- replaying -------------------------------------------------------------

    def pending(self) -> bool:
        """Whether any segment (open, closed or claimed) exists."""
        return any(_NAME.match(p.name) for p in self._entries())

    def _entries(self) -> list[Path]:
        try:
            return sorted(self.directory.iterdir())
        except FileNotFoundError:
            return []

    def claim(self) -> list[Path]:
        """Close our segment, recover dead processes' files, and claim every closed segment."""
        self.close_segment()
        claimed: list[Path] = []
        for path in self._entries():
            match = _NAME.match(path.name)
            if match is None or match["name"] != self.name:
                continue
            closed = path.with_name(f"{match['name']}-{match['pid']}-{match['seq']}.jsonl")
            source: Path | None = path
            if match["owner"] is not None:
                if pid_exists(int(match["owner"])):
                    continue  # another live process is replaying it
                source = self._rename(path, closed)  # a replayer died: take it back
            elif match["state"] == "open":
                if pid_exists(int(match["pid"])):
                    continue  # still being written
                source = self._rename(path, closed)
            if source is None:
                continue
            target = self._rename(source, source.with_name(f"{source.name}.claimed-{self._pid}"))
            if target is not None:
                claimed.append(target)
        return claimed

    @staticmethod
    def _rename(source: Path, target: Path) -> Path | None:
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None  # another process got there first
        return target

    def read(self, path: Path) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        bad = 0
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                bad += 1  # a torn last line: the crash happened before that batch was acknowledged
        if bad:
            log.warning("spool segment had unreadable lines", extra={"path": str(path), "lines": bad})
        return records

    def release(self, path: Path) -> None:
        """Give a claimed segment back (its replay failed); it will be claimed again."""
        original = path.name.rsplit(".claimed-", 1)[0]
        self._rename(path, path.with_name(original))

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def dead_letter(self, records: list[dict[str, Any]]) -> Path:
        """Keep records Postgres refused, for an operator (``relay spool replay``); never replayed automatically."""
        target = self.directory / f"{self.name}.dead"
        _private_dir(self.directory)
        with self._lock:
            _append_private(target, b"".join(orjson.dumps(r) + b"\n" for r in records))
        return target

    def claim_dead_letters(self) -> list[Path]:
        """Claim the dead-letter file, and any whose replayer died, for a replay."""
        claimed: list[Path] = []
        for path in self._entries():
            if path.name == f"{self.name}.dead":
                pass
            elif path.name.startswith(f"{self.name}.dead.claimed-"):
                owner = path.name.removeprefix(f"{self.name}.dead.claimed-").split("-")[0]
                if not owner.isdigit() or pid_exists(int(owner)):
                    continue
            else:
                continue
            target = self._rename(path, self.directory / f"{self.name}.dead.claimed-{self._pid}-{len(claimed)}")
            if target is not None:
                claimed.append(target)
        return claimed
