"""Persistence: ``postgres`` (pools, migrations, RLS-scoped transactions) and ``redis``."""
