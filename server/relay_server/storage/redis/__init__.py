"""Redis: rate-limit windows, spend reservations, caches, pub/sub invalidation."""
