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


def build_archive(settings: Settings, db: Database, runner: BackgroundRunner | None, metrics: Any = None) -> Archive:
    files = ArchiveFiles.from_url(settings.archive_location)
    archiver = RequestArchiver(db, files, retention=timedelta(days=settings.archive_retention_days), metrics=metrics)
    if runner is not None and settings.archiver:
        runner.add_periodic(Periodic("request-archiver", settings.archive_interval_s, archiver.run_once))
    return Archive(files, ColdRequests(db, files), archiver)
