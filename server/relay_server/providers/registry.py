"""The only place that knows provider APIs by name.

``providers.api`` in the catalog names a wire format; ``build_provider`` turns
it into a ``Provider``.  Adding a provider API means one new ``case`` here and
one translator module, nothing else.
"""

from __future__ import annotations

from typing import Final

from relay_server.domain.provider import Provider
from relay_server.providers.anthropic import ANTHROPIC_BASE_URL, AnthropicTranslator
from relay_server.providers.anthropic_native import AnthropicNative
from relay_server.providers.groq import GROQ_BASE_URL, GroqTranslator
from relay_server.providers.http_client import Timeouts
from relay_server.providers.http_provider import HttpProvider
from relay_server.providers.mistral import MISTRAL_BASE_URL, MistralTranslator
from relay_server.providers.openai_compat import (
    OPENAI_BASE_URL,
    GenericOpenAICompatible,
    OpenAICompatTranslator,
)
from relay_server.providers.openai_responses import OpenAIResponsesTranslator
from relay_server.providers.translator import Translator
from relay_server.providers.upstream_http import UpstreamHttp

PROVIDER_APIS: Final = ("openai", "anthropic", "mistral", "groq", "openai_compatible", "test")


def build_provider(
    api: str,
    *,
    name: str,
    client: UpstreamHttp | None,
    base_url: str = "",
    timeouts: Timeouts | None = None,
    test_chunk_delay_s: float = 0.0,
) -> Provider:
    """A ``Provider`` for one ``providers`` row.

    ``base_url`` is the row's default endpoint (a credential's own base URL
    still wins per call); empty means the provider's public endpoint.
    ``client`` may be ``None`` only for ``test``, which does no I/O.
    """

    def http(translator: Translator, **by_door: Translator) -> Provider:
        """``translator`` for every door's OpenAI-shaped calls; ``by_door`` for the doors whose own
        dialect this provider speaks (passed through natively)."""
        if client is None:
            raise ValueError(f"provider api {api!r} needs an HttpClient")
        return HttpProvider(name, translator, client, timeouts, by_door=by_door)

    match api:
        case "openai":
            base = base_url or OPENAI_BASE_URL
            return http(OpenAICompatTranslator(name, base), responses=OpenAIResponsesTranslator(name, base))
        case "anthropic":
            url = base_url or ANTHROPIC_BASE_URL
            return http(AnthropicTranslator(name, url), anthropic=AnthropicNative(name, url))
        case "mistral":
            return http(MistralTranslator(name, base_url or MISTRAL_BASE_URL))
        case "groq":
            return http(GroqTranslator(name, base_url or GROQ_BASE_URL))
        case "openai_compatible":
            return http(GenericOpenAICompatible(name, base_url))
        case "test":
            # Imported on use: test mode pulls in the tokenizer, which a process
            # serving only HTTP providers never needs to load.
            from relay_server.providers.testmode import TestModeProvider

            return TestModeProvider(chunk_delay_s=test_chunk_delay_s)
        case _:
            raise ValueError(f"unknown provider api {api!r}; expected one of {', '.join(PROVIDER_APIS)}")
