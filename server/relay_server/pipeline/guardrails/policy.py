"""A principal's guardrails, compiled once per stored policy version and read per request.

The policy is the tenant config value ``guardrails`` (``domain/guardrails.py``), read through
the tenant config cache every worker already keeps (dropped everywhere when the config
changes).  Compiling it (regexes, detectors) happens once per distinct stored value: the
compiled form is kept by that value, so a request costs one dict lookup when nothing changed
and nothing at all beyond it when the tenant has no guardrails.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from relay_server.domain.guardrails import GuardrailPolicy, PolicyError, PolicySet, parse_policy
from relay_server.domain.request import Principal
from relay_server.text.pii import Scanner, scanner

log = logging.getLogger(__name__)

CONFIG_KEY = "guardrails"
_MAX_COMPILED = 1024

# The shipped prompt-injection set (``"injection": "block" | "flag"``): phrasings that try to
# replace the operator's instructions.  Deliberately narrow: a false positive refuses a user.
INJECTION_PATTERNS = (
    r"(?i)\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:the\s+|your\s+)?"
    r"(?:previous|prior|above|earlier|preceding|system)\s+(?:instructions?|prompts?|rules|directions|messages?)",
    r"(?i)\b(?:reveal|print|show|repeat|output|leak)\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+)?"
    r"(?:system\s+prompt|hidden\s+(?:prompt|instructions)|initial\s+instructions|developer\s+message)",
    r"(?i)\byou\s+are\s+(?:now\s+)?(?:in\s+)?(?:DAN|developer\s+mode|jailbreak(?:\s+mode)?|an?\s+unrestricted\s+(?:AI|model))\b",
    r"(?i)\bdo\s+anything\s+now\b",
    r"(?i)<\s*/?\s*(?:system|im_start|im_end)\s*>|\[/?INST\]",
)


@dataclass(frozen=True, slots=True)
class Compiled:
    """One principal's policy, ready to run."""

    policy: GuardrailPolicy
    pii: Scanner
    deny: tuple[re.Pattern[str], ...]
    injection: tuple[re.Pattern[str], ...]


class ConfigValues(Protocol):
    """The tenant's stored config values (``TenantConfigReader``: cached, invalidated on change)."""

    async def values(self, tenant_id: str) -> Mapping[str, str]: ...


_INJECTION = tuple(re.compile(p) for p in INJECTION_PATTERNS)


def compile_policy(policy: GuardrailPolicy) -> Compiled:
    return Compiled(
        policy=policy,
        pii=scanner(policy.pii, policy.national_ids),
        deny=tuple(re.compile(p) for p in policy.deny),
        injection=_INJECTION if policy.injection != "off" else (),
    )


class GuardrailSource:
    """``for_principal(principal)``: the compiled policy, or None when every guardrail is off."""

    def __init__(self, config: ConfigValues) -> None:
        self._config = config
        self._compiled: dict[str, tuple[Compiled | None, dict[str, Compiled | None]]] = {}

    async def for_principal(self, principal: Principal) -> Compiled | None:
        raw = (await self._config.values(principal.tenant_id)).get(CONFIG_KEY)
        if not raw:
            return None  # the common case: no guardrails
        entry = self._compiled.get(raw)
        if entry is None:
            entry = self._compile(raw, principal.tenant_id)
        tenant, keys = entry
        return keys.get(principal.key_id, tenant) if keys else tenant

    def _compile(self, raw: str, tenant_id: str) -> tuple[Compiled | None, dict[str, Compiled | None]]:
        try:
            policies = parse_policy(raw)
        except PolicyError:  # written before a rule changed: serve without, and say so
            log.warning("ignoring invalid stored guardrails policy", extra={"tenant_id": tenant_id})
            policies = PolicySet()
        entry = (_active(policies.tenant), {k: _active(p) for k, p in policies.keys.items()})
        if len(self._compiled) >= _MAX_COMPILED:
            self._compiled.clear()  # old versions of every tenant's policy: rebuilt on use
        self._compiled[raw] = entry
        return entry


def _active(policy: GuardrailPolicy) -> Compiled | None:
    return compile_policy(policy) if policy.active else None
