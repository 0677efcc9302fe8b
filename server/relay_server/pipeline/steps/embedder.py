"""Text → vector for the semantic cache and thread search.

``PipelineEmbedder`` routes the embedding through Relay's own pipeline with the
caller's API key: it is authenticated, limited, routed (test keys get test
mode's deterministic vectors) and metered like any ``/v1/embeddings`` request,
with a request id of its own.  Only the ``authorization`` header is passed on,
so a test-mode simulation header aimed at the chat request does not hit the
embedding too.  Tests plug in their own ``Embedder`` with crafted vectors.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from relay_server.domain.request import new_request_id

# The width of the embedding columns (migrations 0008 and 0010).
EMBEDDING_DIMS = 1536


class Embedder(Protocol):
    async def embed(self, metadata: Mapping[str, str], model: str, text: str) -> list[float] | None:
        """A unit-normalisable vector of ``EMBEDDING_DIMS`` floats, or None when the model gives none."""
        ...


class _Pipeline(Protocol):
    async def admit(self, kind: Any, body: Mapping[str, Any], metadata: Mapping[str, str], request_id: str) -> Any: ...

    async def complete(self, admitted: Any) -> dict[str, Any]: ...


def decode_embedding(value: Any) -> list[float] | None:
    """OpenAI's ``embedding`` value (floats or base64 float32) → floats."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        return [float(x) for x in value]
    return None


def usable(vector: Sequence[float] | None) -> bool:
    return (
        vector is not None
        and len(vector) == EMBEDDING_DIMS
        and all(math.isfinite(x) for x in vector)
        and any(x != 0 for x in vector)  # cosine distance to a zero vector is undefined
    )


class PipelineEmbedder:
    def __init__(self) -> None:
        self._pipeline: _Pipeline | None = None

    def bind(self, pipeline: _Pipeline) -> None:
        """The pipeline is built after the cache that uses this embedder."""
        self._pipeline = pipeline

    async def embed(self, metadata: Mapping[str, str], model: str, text: str) -> list[float] | None:
        if self._pipeline is None:
            raise RuntimeError("PipelineEmbedder used before bind()")
        headers = {"authorization": metadata.get("authorization", "")}
        body = {"model": model, "input": text, "encoding_format": "float"}
        admitted = await self._pipeline.admit("embedding", body, headers, new_request_id())
        response = await self._pipeline.complete(admitted)
        data = response.get("data") or []
        vector = decode_embedding(data[0].get("embedding")) if data and isinstance(data[0], Mapping) else None
        return vector if usable(vector) else None
