"""Rewrite a branch's imports to follow the layer moves of docs/layers.md (December 2026).

For work that started before the moves: run it on the files the branch adds or changes, then
`ruff check --fix` (import order) and `lint-imports`.  It rewrites `from relay_server.X import Y`
statements (splitting those whose names moved to different modules), `import` of moved modules,
dotted module paths in strings (monkeypatch targets, logger names) and the SDK's old generated
package (now `relay_proto`).

Usage: python scripts/follow_moves.py FILE_OR_DIR [...]
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

R = "relay_server."
_STEPS = "authenticate admission limits spend noisy cache embedder tenant_flags request_tags meter usage_estimate"
_ROUTING = "catalog route candidates failover health provider_directory credential_cache"

# Whole modules that moved (old → new).
RENAMES: dict[str, str] = {
    R + k: R + v
    for k, v in {
        "providers.base": "domain.provider",
        "pipeline.context": "domain.request",
        "pipeline.tokens": "text.tokens",
        "pipeline.chunks": "text.chunks",
        "pipeline.cache_key": "text.cache_key",
        **{f"pipeline.{m}": f"pipeline.steps.{m}" for m in _STEPS.split()},
        **{f"pipeline.{m}": f"pipeline.routing.{m}" for m in _ROUTING.split()},
        "pipeline.steps.catalog": "pipeline.routing.catalog",
        "workers.routing": "app.routing",
        "workers.metering": "app.metering",
        "tenancy.components": "app.tenancy",
        "threads.components": "app.threads",
        "observability.components": "app.observability",
        "crypto.vault": "tenancy.vault",
        "workers.webhook_destinations": "webhook_destinations",
    }.items()
}
RENAMES["relay_sdk." + "_proto"] = "relay_proto"  # split: this file must not rewrite itself

# Names that left a module for another one (module after renaming → {name: new module}).
_PG = R + "storage.postgres."
SPLITS: dict[str, dict[str, str]] = {
    R + "pipeline.routing.catalog": {"CatalogEntry": R + "domain.catalog"},
    R + "pipeline.steps.authenticate": dict.fromkeys(("KeyRecord", "MintedKey", "mint_key", "hash_key"), R + "domain.keys"),
    R + "pipeline.steps.limits": dict.fromkeys(("QuotaRow", "KeyPolicy", "parse_key_overrides", "RESOURCES"), R + "domain.policy"),
    R + "pipeline.steps.meter": {
        **dict.fromkeys(("Cost", "price", "DEFAULT_MARKUP"), R + "domain.pricing"),
        **dict.fromkeys(("Outcome", "Metered", "RequestRecorder"), R + "domain.metered"),
    },
    _PG + "tenants": {"TenantRow": R + "domain.tenants"},
    _PG + "members": {"MemberRow": R + "domain.tenants"},
    _PG + "tenant_config": {"FeatureState": R + "domain.tenants"},
    _PG + "audit": {"AuditRow": R + "domain.audit"},
    _PG + "credentials": {"CredentialRow": R + "domain.credentials"},
    _PG + "api_keys": {"ApiKeyRow": R + "domain.keys", "NewKey": R + "domain.keys"},
    _PG + "usage": {"UsageFilter": R + "domain.usage", "money_micros": R + "domain.pricing"},
}


def _final(module: str) -> str:
    while module in RENAMES:
        module = RENAMES[module]
    return module


def _member_move(package: str, name: str) -> tuple[str, str] | None:
    """`from relay_server.pipeline import tokens`: the module `tokens` moved."""
    moved = _final(f"{package}.{name}")
    if moved == f"{package}.{name}":
        return None
    new_package, _, new_name = moved.rpartition(".")
    return new_package, new_name


def _rewrite(node: ast.ImportFrom, indent: str) -> list[str] | None:
    assert node.module is not None
    groups: dict[str, list[str]] = {}
    changed = False
    for alias in node.names:
        text = alias.name + (f" as {alias.asname}" if alias.asname else "")
        target = _final(node.module)
        member = _member_move(node.module, alias.name)
        if member is not None:
            target, new_name = member
            text = new_name + (f" as {alias.asname or alias.name}" if (alias.asname or new_name != alias.name) else "")
        target = SPLITS.get(target, {}).get(alias.name, target)
        changed |= target != node.module or member is not None
        groups.setdefault(target, []).append(text)
    if not changed:
        return None
    lines = []
    for module, names in groups.items():
        line = f"{indent}from {module} import {', '.join(names)}"
        if len(line) > 120:
            inner = "".join(f"{indent}    {n},\n" for n in names)
            line = f"{indent}from {module} import (\n{inner}{indent})"
        lines.append(line + "\n")
    return lines


def rewrite(text: str) -> str:
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith(
            ("relay_server", "relay_sdk")
        ):
            first = lines[node.lineno - 1]
            new = _rewrite(node, first[: len(first) - len(first.lstrip())])
            if new is not None:
                edits.append((node.lineno, node.end_lineno or node.lineno, new))
    for start, end, new in sorted(edits, reverse=True):
        lines[start - 1 : end] = new
    out = "".join(lines)
    for old in sorted(RENAMES, key=len, reverse=True):  # dotted paths in strings and `import` statements
        out = re.sub(re.escape(old) + r"(?![\w])", _final(old), out)
    return out


def main(paths: list[str]) -> None:
    files = [p for arg in paths for p in ([Path(arg)] if Path(arg).is_file() else sorted(Path(arg).rglob("*.py")))]
    for path in files:
        if path.resolve() == Path(__file__).resolve():
            continue
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            print(f"rewrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
