"""Provider backends behind the ``Provider`` protocol of ``domain.provider``."""
