"""The tenant's own classifier: an HTTP endpoint Relay asks before a request goes on.

``POST <url>`` with ``{"request_id": ..., "input": ["text", ...]}``; the answer
``{"flagged": true}`` refuses the request.  Bounded by the policy's ``timeout_ms``; a
timeout, a non-2xx answer or an unreadable body is the policy's ``fail`` choice: ``open``
lets the request through (recorded as ``fail_open``), ``closed`` refuses it (503
``guardrail_unavailable``).  The URL is the tenant's, so it is held to the address policy
(``address_policy.py``): IP literals are judged before the request, names when they resolve.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from relay_server.address_policy import check_host
from relay_server.domain.guardrails import Classifier

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

Verdict = Literal["allow", "block", "fail_open", "unavailable"]
_MAX_TEXT = 200_000  # characters sent to a classifier per request


class ClassifierClient:
    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp (≈ 10 MB) is loaded with the first classifier call, not at worker start.
        import aiohttp  # noqa: PLC0415

        from relay_server.webhook_destinations import GuardedResolver  # noqa: PLC0415 (imports aiohttp)

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=self._allow_private), limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def check(self, classifier: Classifier, texts: list[str], request_id: str) -> Verdict:
        try:
            check_host(urlsplit(classifier.url).hostname or "", allow_private=self._allow_private)
            async with asyncio.timeout(classifier.timeout_ms / 1000):
                payload = {"request_id": request_id, "input": _bounded(texts)}
                async with self._client().post(classifier.url, json=payload, allow_redirects=False) as resp:
                    if resp.status // 100 != 2:
                        raise ValueError(f"classifier answered HTTP {resp.status}")
                    answer = await resp.json(content_type=None)
            flagged = answer.get("flagged") if isinstance(answer, dict) else None
            if not isinstance(flagged, bool):
                raise ValueError("classifier answer has no boolean `flagged`")
        except Exception as exc:  # noqa: BLE001 (every failure is the policy's fail-open/closed choice)
            log.warning("guardrail classifier failed", extra={"request_id": request_id, "error": type(exc).__name__})
            return "fail_open" if classifier.fail_open else "unavailable"
        return "block" if flagged else "allow"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _bounded(texts: list[str]) -> list[str]:
    out, left = [], _MAX_TEXT
    for text in texts:
        if left <= 0:
            break
        out.append(text[:left])
        left -= len(text)
    return out
