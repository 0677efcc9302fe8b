"""Provider backends behind the ``Provider`` protocol of ``providers.base``."""
