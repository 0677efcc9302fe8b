"""The archive's path rules: a tenant's files live only under its own directories."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from relay_server.storage.archive.files import ArchiveFiles, file_path, owned_by, tenant_dir


def test_the_layout_is_month_then_tenant() -> None:
    assert file_path(date(2026, 8, 1), "ten_abc") == "requests/month=2026-08/tenant=ten_abc/part-0.parquet"


@pytest.mark.parametrize("tenant", ["../ten_a", "ten/a", "ten_a/..", "", "ten a", "ten_a%2f"])
def test_tenant_ids_that_could_leave_their_directory_are_refused(tenant: str) -> None:
    with pytest.raises(ValueError):
        tenant_dir(date(2026, 8, 1), tenant)


@pytest.mark.parametrize(
    ("path", "owned"),
    [
        ("requests/month=2026-08/tenant=ten_a/part-0.parquet", True),
        ("requests/month=2026-08/tenant=ten_ab/part-0.parquet", False),
        ("requests/month=2026-08/tenant=ten_b/part-0.parquet", False),
        ("requests/month=2026-08/tenant=ten_a/../tenant=ten_b/part-0.parquet", False),
        ("other/month=2026-08/tenant=ten_a/part-0.parquet", False),
        ("requests/tenant=ten_a/part-0.parquet", False),
    ],
)
def test_owned_by_accepts_only_the_tenants_own_files(path: str, owned: bool) -> None:
    assert owned_by(path, "ten_a") is owned


def test_urls(tmp_path: Path) -> None:
    local = ArchiveFiles.from_url(str(tmp_path / "a"))
    assert local.local and not (tmp_path / "a").exists()  # made by the first write
    assert ArchiveFiles.from_url(f"file://{tmp_path / 'b'}").full("x") == f"{tmp_path / 'b'}/x"
    for bad in ("gs://bucket/x", "s3://", "http://host/x"):
        with pytest.raises(ValueError):
            ArchiveFiles.from_url(bad)
    assert local.erase_tenant("ten_gone") == 0
