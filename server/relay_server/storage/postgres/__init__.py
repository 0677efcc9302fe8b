"""Postgres access: the two pools (``Database``), migrations, and the embedded dev server.

``embedded`` is not imported here: only the stack launcher and tests need it.
"""

from relay_server.storage.postgres.migrate import APP_ROLE, MigrationError, apply_migrations
from relay_server.storage.postgres.pool import Database, app_dsn_from_owner

__all__ = ["APP_ROLE", "Database", "MigrationError", "app_dsn_from_owner", "apply_migrations"]
