"""How a credential is presented to each provider API: the one place that puts a provider key
into a request (every translator of that API asks here, whichever door the call came through).

``bearer`` is OpenAI's scheme, shared by every OpenAI-compatible API (Mistral, Groq, any
base URL); ``x-api-key`` is Anthropic's.  The returned headers carry the secret: they only
ever travel in ``UpstreamRequest.headers``, which is excluded from ``repr`` and never logged.
"""

from __future__ import annotations

from typing import Literal

from relay_server.domain.provider import Credential

Scheme = Literal["bearer", "x-api-key"]


def credential_headers(credential: Credential | None, scheme: Scheme) -> dict[str, str]:
    """The auth headers for ``credential`` (none without one: a keyless local endpoint)."""
    if credential is None or not credential.api_key:
        return {}
    if scheme == "x-api-key":
        return {"x-api-key": credential.api_key}
    return {"Authorization": f"Bearer {credential.api_key}"}
