"""Declarative configuration: ``relay apply -f relay.yaml`` / ``relay diff -f relay.yaml``.

``spec`` reads the file (``${ENV}`` references resolved from the environment,
unknown keys refused) into the desired state; ``plan`` reads the current state
through the admin API, lists the changes, and applies them through the same
API, so every change is validated, audited and broadcast like any other.
Only what the file names is managed: nothing absent from it is deleted.
"""
