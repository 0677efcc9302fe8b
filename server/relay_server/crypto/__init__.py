"""Envelope encryption of provider credentials (AES-256-GCM, master-key keyring)."""
