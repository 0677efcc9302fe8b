"""Request archival, assembled: the archive location, the cold reader the
usage API merges in, and the archiver as a periodic job of the runner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from relay_server.settings import Settings
from relay_server.storage.archive.cold import ColdRequests
from relay_server.storage.archive.files import ArchiveFiles
from relay_server.storage.postgres.pool import Database
from relay_server.workers.archiver import RequestArchiver
from relay_server.workers.runner import BackgroundRunner, Periodic


@dataclass
class Archive:
    files: ArchiveFiles
    cold: ColdRequests
    archiver: RequestArchiver


def build_archive(settings: Settings, db: Database, metrics: Any = None) -> Archive:
    files = ArchiveFiles.from_url(settings.archive_location)
    archiver = RequestArchiver(db, files, retention=timedelta(days=settings.archive_retention_days), metrics=metrics)
    return Archive(files, ColdRequests(db, files), archiver)


def register_archiver(settings: Settings, archive: Archive, runner: BackgroundRunner) -> None:
    """The archiver as a periodic job of this process's runner (one run at a time across nodes: its lock)."""
    if settings.archiver:
        runner.add_periodic(Periodic("request-archiver", settings.archive_interval_s, archive.archiver.run_once))
