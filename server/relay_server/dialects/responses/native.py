"""A native Responses answer (a provider that serves the API itself) with Relay's ids.

The provider is called with ``store: false`` and the whole conversation inlined, so its ids
refer to nothing it keeps.  Relay rewrites them before the client sees them: the response id
becomes Relay's ``resp_…``, each output item id a Relay id with the same prefix (``msg_``,
``fc_``, ``rs_`` …; the same upstream id always maps to the same Relay id), and the fields that
are Relay's state are set from the client's request (``previous_response_id``, ``store``,
``background``, ``metadata``, ``model`` as the client named it).  Everything else — unknown
fields, sequence numbers, event types Relay does not know — passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay_server.dialects.responses.request import Turn
from relay_server.ids import new_id

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class NativeIds:
    """One native answer's id map and what the door stores from it."""

    def __init__(self, turn: Turn, response_id: str, *, model: str, created_at: float) -> None:
        self.turn = turn
        self.created_at = int(created_at)
        self.response_id = response_id
        self.model = model
        self.sequence = 0
        """The next sequence number (after the last event seen)."""
        self.output: dict[int, dict[str, Any]] = {}
        self.final: dict[str, Any] | None = None
        self._ids: dict[str, str] = {}

    def item_id(self, upstream: str) -> str:
        mapped = self._ids.get(upstream)
        if mapped is None:
            prefix = upstream.split("_", 1)[0] if "_" in upstream else "item"
            mapped = self._ids[upstream] = new_id(prefix)
        return mapped

    def item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        copied = dict(item)
        if isinstance(copied.get("id"), str):
            copied["id"] = self.item_id(copied["id"])
        return copied

    def response(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        response = dict(upstream)
        response["id"] = self.response_id
        response["model"] = self.model
        response["previous_response_id"] = self.turn.previous_response_id
        response["store"] = self.turn.store
        response["background"] = self.turn.background
        response["metadata"] = self.turn.metadata or {}
        if isinstance(response.get("output"), list):
            response["output"] = [self.item(i) if isinstance(i, Mapping) else i for i in response["output"]]
        return response

    def event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """One upstream event with Relay's ids; remembers the output and the terminal response."""
        rewritten = dict(event)
        if isinstance(rewritten.get("response"), Mapping):
            rewritten["response"] = self.response(rewritten["response"])
        if isinstance(rewritten.get("item_id"), str):
            rewritten["item_id"] = self.item_id(rewritten["item_id"])
        if isinstance(rewritten.get("item"), Mapping):
            rewritten["item"] = self.item(rewritten["item"])
        kind = rewritten.get("type")
        if kind == "response.output_item.done" and isinstance(rewritten.get("output_index"), int):
            self.output[rewritten["output_index"]] = rewritten["item"]
        if kind in _TERMINAL:
            final = rewritten["response"]
            if not final.get("output") and self.output:
                final["output"] = [self.output[i] for i in sorted(self.output)]
            self.final = final
        if isinstance(rewritten.get("sequence_number"), int):
            self.sequence = max(self.sequence, rewritten["sequence_number"] + 1)
        return rewritten

    def failed(self, code: str, message: str) -> dict[str, Any]:
        """Relay's own ``response.failed`` after the provider's stream broke off."""
        output = [self.output[i] for i in sorted(self.output)]
        response = self.response({"object": "response", "created_at": self.created_at, "status": "failed", "output": output,
                                  "error": {"code": code, "message": message}, "usage": None})  # fmt: skip
        self.final = response
        event = {"type": "response.failed", "sequence_number": self.sequence, "response": response}
        self.sequence += 1
        return event
