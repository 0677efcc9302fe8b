"""A tenant's guardrail policy: what it is and how its JSON is read.

Stored as the tenant config value ``guardrails`` (one JSON object, validated by
``tenancy/config_values.py`` through ``parse_policy`` on every write), with
per-key overrides under ``"keys": {"<api key id>": {...}}``: a key's section replaces
the tenant's section of the same name (``input``, ``pii``, ``deny``, ...), so a key
can be stricter or looser than its tenant.  Absent or ``{}``: every guardrail off.

    {"input":  {"max_input_tokens": 8000, "max_messages": 50, "max_characters": 100000,
                "max_tools": 16, "allowed_content_types": ["text"]},
     "pii":    {"email": "redact", "credit_card": "block", "ip": "flag",
                "national_ids": ["us_ssn"], "scope": ["input", "output"]},
     "deny":   {"patterns": ["(?i)project\\s+falcon"], "action": "block"},
     "injection": "block",
     "classifier": {"url": "https://moderation.example/check", "timeout_ms": 500, "fail": "open"},
     "output_schema": "retry",
     "keys": {"key_123": {"pii": {}}}}

Pure values: compiled regexes and detectors live with the code that runs them
(``text/pii.py``, ``pipeline/guardrails/``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PII_DETECTORS = ("email", "phone", "credit_card", "iban", "national_id", "secret", "ip")
NATIONAL_IDS = ("us_ssn", "uk_nino", "es_dni")
ACTIONS = ("block", "redact", "flag")
CONTENT_TYPES = ("text", "image_url", "input_audio", "file")
SCHEMA_MODES = ("off", "retry", "error")
_SECTIONS = ("input", "pii", "deny", "injection", "classifier", "output_schema")
_LIMITS = ("max_input_tokens", "max_messages", "max_characters", "max_tools")
MAX_PATTERNS = 100
MAX_PATTERN_CHARS = 500


class PolicyError(ValueError):
    """Why a guardrails value is refused (the 400's message)."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_input_tokens: int | None = None
    max_messages: int | None = None
    max_characters: int | None = None
    max_tools: int | None = None
    allowed_content_types: tuple[str, ...] | None = None  # None: every type

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_input_tokens, self.max_messages, self.max_characters,
                                           self.max_tools, self.allowed_content_types))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Classifier:
    url: str
    timeout_ms: int = 1000
    fail_open: bool = True


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    """One principal's effective guardrails (the tenant's, with its key's sections applied)."""

    limits: InputLimits = InputLimits()
    pii: Mapping[str, str] = field(default_factory=dict)  # detector -> action
    national_ids: tuple[str, ...] = NATIONAL_IDS
    pii_input: bool = True
    pii_output: bool = True
    deny: tuple[str, ...] = ()
    deny_action: str = "block"
    injection: str = "off"  # off | block | flag: the shipped prompt-injection set
    classifier: Classifier | None = None
    output_schema: str = "off"

    @property
    def active(self) -> bool:
        return bool(self.limits.any or self.pii or self.deny or self.injection != "off"
                    or self.classifier or self.output_schema != "off")  # fmt: skip

    @property
    def redacts_output(self) -> bool:
        return self.pii_output and bool(self.pii)


OFF = GuardrailPolicy()


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The tenant's policy and its keys' overrides, as stored."""

    tenant: GuardrailPolicy = OFF
    keys: Mapping[str, GuardrailPolicy] = field(default_factory=dict)

    def for_key(self, key_id: str) -> GuardrailPolicy:
        return self.keys.get(key_id, self.tenant)


def parse_policy(raw: str, *, check_url: Any = None) -> PolicySet:
    """The stored JSON as a ``PolicySet``; ``PolicyError`` naming the first problem.

    ``check_url`` (optional) validates the classifier URL (the caller's address policy)."""
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise PolicyError("a JSON object (see docs/guardrails.md).") from None
    if not isinstance(doc, dict):
        raise PolicyError("a JSON object (see docs/guardrails.md).")
    keys = doc.get("keys", {})
    if not isinstance(keys, dict):
        raise PolicyError("`keys` must map API key ids to policy sections.")
    tenant_sections = {k: v for k, v in doc.items() if k != "keys"}
    tenant = _policy(tenant_sections, "", check_url)
    overrides: dict[str, GuardrailPolicy] = {}
    for key_id, sections in keys.items():
        if not isinstance(sections, dict):
            raise PolicyError(f"`keys.{key_id}` must be an object of policy sections.")
        overrides[str(key_id)] = _policy({**tenant_sections, **sections}, f"keys.{key_id}.", check_url)
    return PolicySet(tenant, overrides)


def _policy(doc: Mapping[str, Any], where: str, check_url: Any) -> GuardrailPolicy:
    unknown = [k for k in doc if k not in _SECTIONS]
    if unknown:
        raise PolicyError(f"unknown section `{where}{unknown[0]}`; known: {', '.join(_SECTIONS)}, keys.")
    pii = _pii(doc.get("pii", {}), where)
    deny, deny_action = _deny(doc.get("deny", {}), where)
    injection = doc.get("injection", "off")
    if injection not in ("off", "block", "flag"):
        raise PolicyError(f"`{where}injection` must be off, block or flag.")
    schema = doc.get("output_schema", "off")
    if schema not in SCHEMA_MODES:
        raise PolicyError(f"`{where}output_schema` must be off, retry or error.")
    return GuardrailPolicy(
        limits=_limits(doc.get("input", {}), where), pii=pii[0], national_ids=pii[1], pii_input=pii[2],
        pii_output=pii[3], deny=deny, deny_action=deny_action, injection=injection,
        classifier=_classifier(doc.get("classifier"), where, check_url), output_schema=schema,
    )  # fmt: skip


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 100_000_000:
        raise PolicyError(f"`{name}` must be a positive integer.")
    return value


def _limits(doc: Any, where: str) -> InputLimits:
    if not isinstance(doc, dict):
        raise PolicyError(f"`{where}input` must be an object.")
    unknown = [k for k in doc if k not in (*_LIMITS, "allowed_content_types")]
    if unknown:
        raise PolicyError(f"unknown input limit `{where}input.{unknown[0]}`.")
    values: dict[str, Any] = {k: _count(doc[k], f"{where}input.{k}") for k in _LIMITS if doc.get(k) is not None}
    types = doc.get("allowed_content_types")
    if types is not None:
        if not isinstance(types, list) or any(t not in CONTENT_TYPES for t in types):
            raise PolicyError(f"`{where}input.allowed_content_types` must list types among {', '.join(CONTENT_TYPES)}.")
        values["allowed_content_types"] = tuple(dict.fromkeys(types))
    return InputLimits(**values)


def _pii(doc: Any, where: str) -> tuple[dict[str, str], tuple[str, ...], bool, bool]:
    if not isinstance(doc, dict):
        raise PolicyError(f"`{where}pii` must be an object.")
    actions: dict[str, str] = {}
    national, scope = NATIONAL_IDS, ["input", "output"]
    for name, value in doc.items():
        if name == "national_ids":
            if not isinstance(value, list) or any(v not in NATIONAL_IDS for v in value):
                raise PolicyError(f"`{where}pii.national_ids` must list ids among {', '.join(NATIONAL_IDS)}.")
            national = tuple(dict.fromkeys(value))
        elif name == "scope":
            if not isinstance(value, list) or not value or any(v not in ("input", "output") for v in value):
                raise PolicyError(f"`{where}pii.scope` must list input and/or output.")
            scope = value
        elif name in PII_DETECTORS:
            if value not in ACTIONS:
                raise PolicyError(f"`{where}pii.{name}` must be block, redact or flag.")
            actions[name] = value
        else:
            raise PolicyError(f"unknown PII detector `{where}pii.{name}`; known: {', '.join(PII_DETECTORS)}.")
    return actions, national, "input" in scope, "output" in scope


def _deny(doc: Any, where: str) -> tuple[tuple[str, ...], str]:
    if not isinstance(doc, dict):
        raise PolicyError(f"`{where}deny` must be an object.")
    patterns = doc.get("patterns", [])
    if not isinstance(patterns, list) or len(patterns) > MAX_PATTERNS:
        raise PolicyError(f"`{where}deny.patterns` must be a list of at most {MAX_PATTERNS} regular expressions.")
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise PolicyError(f"`{where}deny.patterns[{i}]` must be a regular expression of 1 to {MAX_PATTERN_CHARS} characters.")
        try:
            re.compile(pattern)
        except re.error as why:
            raise PolicyError(f"`{where}deny.patterns[{i}]` is not a valid regular expression ({why}).") from None
    action = doc.get("action", "block")
    if action not in ("block", "flag"):
        raise PolicyError(f"`{where}deny.action` must be block or flag.")
    return tuple(patterns), action


def _classifier(doc: Any, where: str, check_url: Any) -> Classifier | None:
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        raise PolicyError(f"`{where}classifier` must be an object with a `url`.")
    timeout = doc.get("timeout_ms", 1000)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 10 <= timeout <= 10_000:
        raise PolicyError(f"`{where}classifier.timeout_ms` must be an integer from 10 to 10000.")
    fail = doc.get("fail", "open")
    if fail not in ("open", "closed"):
        raise PolicyError(f"`{where}classifier.fail` must be open or closed.")
    url = doc["url"]
    if check_url is not None:
        check_url(url)
    return Classifier(url, timeout, fail == "open")
