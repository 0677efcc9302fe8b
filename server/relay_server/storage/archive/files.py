"""Where archived request files live: a local directory or an S3-compatible bucket.

``ArchiveFiles`` wraps a pyarrow filesystem rooted at ``RELAY_ARCHIVE_URL``
(``/some/dir``, ``file:///some/dir`` or ``s3://bucket/prefix``; S3 credentials,
region and endpoint come from the usual AWS environment, which pyarrow reads).
Every path the rest of Relay passes around is relative to that root, and the
layout is fixed here: ``requests/month=YYYY-MM/tenant=<id>/part-<n>.parquet``,
so one tenant's history is one directory per month (separable, erasable).

pyarrow (~90 MB resident) is imported the first time a file is touched, not
when the location is parsed: every worker builds an ``ArchiveFiles`` at start,
and most never read an archived month or run the archiver.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from pyarrow import fs as pafs

_TENANT_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
_ROOT = "requests"


def tenant_dir(month: date, tenant_id: str) -> str:
    """The directory of one tenant's month; refuses ids that could escape it."""
    if not _TENANT_ID.match(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} is not safe in a path")
    return f"{_ROOT}/month={month:%Y-%m}/tenant={tenant_id}"


def file_path(month: date, tenant_id: str, part: int = 0) -> str:
    return f"{tenant_dir(month, tenant_id)}/part-{part}.parquet"


def owned_by(path: str, tenant_id: str) -> bool:
    """Whether ``path`` lies in one of ``tenant_id``'s directories (the cold path's tenant wall)."""
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == _ROOT and parts[1].startswith("month=") and parts[2] == f"tenant={tenant_id}"


def _pafs() -> Any:
    from pyarrow import fs  # noqa: PLC0415  (lazy: see the module docstring)

    return fs


class ArchiveFiles:
    def __init__(self, filesystem: pafs.FileSystem | None, root: str, url: str) -> None:
        self._filesystem = filesystem  # None: made from ``url`` on first use
        self._root = root.rstrip("/")
        self.url = url
        self._s3 = urlparse(url).scheme == "s3"

    @property
    def filesystem(self) -> pafs.FileSystem:
        if self._filesystem is None:
            fs = _pafs()
            if self._s3:
                self._filesystem, root = fs.FileSystem.from_uri(self.url)
                self._root = root.rstrip("/")
            else:
                self._filesystem = fs.LocalFileSystem()
        return self._filesystem

    @property
    def local(self) -> bool:
        return not self._s3

    @classmethod
    def from_url(cls, url: str) -> ArchiveFiles:
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError("RELAY_ARCHIVE_URL s3://… needs a bucket")
            return cls(None, "", url)  # bucket/prefix root and credentials resolved by pyarrow on first use
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"RELAY_ARCHIVE_URL: unsupported scheme {parsed.scheme!r} (a directory or s3://)")
        local = parsed.path if parsed.scheme == "file" else url
        from pathlib import Path  # noqa: PLC0415

        # Made on the first write, not here: a process that never archives leaves no directory behind.
        return cls(None, str(Path(local).expanduser().resolve()), url)

    def full(self, path: str) -> str:
        if self._filesystem is None and self._s3:
            _ = self.filesystem  # an S3 root (bucket/prefix) is known once pyarrow has parsed the URL
        return f"{self._root}/{path}"

    def ensure_dir(self, path: str) -> None:
        self.filesystem.create_dir(self.full(path), recursive=True)

    def size(self, path: str) -> int | None:
        """Bytes of the file, None when it does not exist."""
        info = self.filesystem.get_file_info(self.full(path))
        return info.size if info.type == _pafs().FileType.File else None

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.filesystem.open_input_stream(self.full(path)) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def delete_file(self, path: str) -> None:
        if self.size(path) is not None:
            self.filesystem.delete_file(self.full(path))

    def months(self) -> list[str]:
        """The ``month=YYYY-MM`` directory names present."""
        fs = _pafs()
        selector = fs.FileSelector(self.full(_ROOT), allow_not_found=True)
        return sorted(i.base_name for i in self.filesystem.get_file_info(selector) if i.type == fs.FileType.Directory)

    def tenant_files(self, tenant_id: str) -> list[str]:
        """Every file in ``tenant_id``'s directories, whatever the manifest says (erasure checks this)."""
        fs = _pafs()
        found: list[str] = []
        for month in self.months():
            base = f"{_ROOT}/{month}/tenant={tenant_id}"
            selector = fs.FileSelector(self.full(base), allow_not_found=True, recursive=True)
            found += [f"{base}/{i.path[len(self.full(base)) + 1:]}" for i in self.filesystem.get_file_info(selector)
                      if i.type == fs.FileType.File]  # fmt: skip
        return found

    def erase_tenant(self, tenant_id: str) -> int:
        """Delete every directory of ``tenant_id``; returns the files removed.  Idempotent."""
        if not _TENANT_ID.match(tenant_id):
            raise ValueError(f"tenant id {tenant_id!r} is not safe in a path")
        removed = len(self.tenant_files(tenant_id))
        for month in self.months():
            target = self.full(f"{_ROOT}/{month}/tenant={tenant_id}")
            if self.filesystem.get_file_info(target).type != _pafs().FileType.NotFound:
                self.filesystem.delete_dir(target)
        return removed
