"""Cold request history: Parquet files under ``RELAY_ARCHIVE_URL`` (docs/archival.md)."""
