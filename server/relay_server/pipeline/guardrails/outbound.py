"""The output guardrails of one request: PII in the answer (streamed or whole) and, when the
request asked for ``response_format: json_schema``, the answer checked against its schema.

Streams are redacted through ``StreamRedactor`` per choice: each content delta shows what
can no longer be part of a match, at most the detectors' window is held back, and a
choice's ``finish_reason`` (or the stream's end) releases the rest.  The session calls
``item`` for each item it shows and ``end`` when the provider is done
(``pipeline/session.py``); it knows nothing else of guardrails.

A request whose output is redacted never takes a door's native pass-through (the admission
step drops its native body): every item is then an OpenAI chunk, whose text this module can
rewrite, and the door encodes the redacted text into its own dialect.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from relay_server.domain.provider import NativeEvent, NativeResponse
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.guardrails.inbound import refuse
from relay_server.pipeline.guardrails.policy import Compiled
from relay_server.text.pii import Finding, StreamRedactor, replace

Item = dict[str, Any] | NativeEvent
Response = dict[str, Any] | NativeResponse
VALIDATION_CODE = "output_validation_failed"


class OutputGuard:
    """One request's output filter (stateful: built per request at admission)."""

    def __init__(self, ctx: RequestContext, guard: Compiled) -> None:
        self._ctx = ctx
        self._guard = guard
        self._actions = guard.policy.pii
        self._redact = bool(self._actions) and guard.policy.pii_output
        self._schema = _requested_schema(ctx.body) if guard.policy.output_schema != "off" else None
        self._streams: dict[int, StreamRedactor] = {}
        self._texts: dict[int, list[str]] = {}
        self._last: Mapping[str, Any] | None = None

    @property
    def needed(self) -> bool:
        return self._redact or self._schema is not None

    # -- streamed --------------------------------------------------------------------------

    def item(self, item: Item) -> Item:
        if type(item) is not dict or not item.get("choices"):  # a NativeEvent never comes (see the module doc)
            return item
        self._last = item
        choices = []
        for choice in item["choices"]:
            if type(choice) is not dict:
                choices.append(choice)
                continue
            raw_index = choice.get("index")
            index = raw_index if isinstance(raw_index, int) else 0
            done = choice.get("finish_reason") is not None
            if isinstance(choice.get("text"), str):  # legacy completions
                choice = {**choice, "text": self._piece(index, choice["text"], done)}
            else:
                delta = choice.get("delta")
                content = delta.get("content") if type(delta) is dict else None
                if type(delta) is dict and (type(content) is str or done):
                    shown = self._piece(index, content or "", done)
                    if shown or type(content) is str:
                        choice = {**choice, "delta": {**delta, "content": shown}}
            choices.append(choice)
        return {**item, "choices": choices}

    def end(self) -> list[Item]:
        """What the stream still owes at its end: held-back text of choices that never finished."""
        tails = []
        for index, stream in sorted(self._streams.items()):
            text = stream.flush()
            if text:
                tails.append({"index": index, "delta": {"content": text}, "finish_reason": None})
        self._validate_stream()
        if not tails or self._last is None:
            return []
        return [{k: v for k, v in self._last.items() if k not in ("choices", "usage")} | {"choices": tails}]

    def _piece(self, index: int, text: str, done: bool) -> str:
        if self._schema is not None:
            self._texts.setdefault(index, []).append(text)
        if not self._redact:
            return text
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = StreamRedactor(self._guard.pii, self._found, keep=self._kept)
        shown = stream.feed(text) if text else ""
        if done:
            shown += stream.flush()
            if self._schema is not None and index == 0:
                self._validate_stream()
        return shown

    def _found(self, finding: Finding) -> None:
        action = self._actions[finding.detector]
        self._ctx.note_guardrail(f"pii.{finding.detector}", "output", action)
        if action == "block":
            raise refuse(f"The answer was stopped by a guardrail: it contains {finding.detector} data.")

    def _kept(self, detector: str) -> bool:
        return self._actions[detector] != "redact"

    def _validate_stream(self) -> None:
        if self._schema is None or 0 not in self._texts:
            return
        text, self._texts = "".join(self._texts[0]), {}
        if not _conforms(text, self._schema):
            self._ctx.note_guardrail("output_schema", "output", "error")
            raise _invalid()

    # -- not streamed ----------------------------------------------------------------------

    async def response(self, response: Response, again: Callable[[], Awaitable[Response]]) -> Response:
        """The answer after validation (retried once when the tenant chose ``retry``) and redaction."""
        if isinstance(response, NativeResponse):
            return response
        if self._schema is not None and not _conforms(_content(response), self._schema):
            retry = self._guard.policy.output_schema == "retry"
            self._ctx.note_guardrail("output_schema", "output", "retry" if retry else "error")
            if not retry:
                raise _invalid()
            response = await again()
            if isinstance(response, NativeResponse) or not _conforms(_content(response), self._schema):
                self._ctx.note_guardrail("output_schema", "output", "error")
                raise _invalid()
        if self._redact:
            response = self._redacted(response)
        return response

    def _redacted(self, response: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for choice in response.get("choices") or ():
            message = choice.get("message") if isinstance(choice, Mapping) else None
            field, holder = ("text", choice) if isinstance(choice, Mapping) and isinstance(choice.get("text"), str) else (
                "content", message)  # fmt: skip
            text = holder.get(field) if isinstance(holder, Mapping) else None
            if isinstance(text, str):
                findings = self._guard.pii.scan(text)
                for f in findings:
                    self._found(f)
                if findings:
                    new = replace(text, findings, keep=self._kept)
                    choice = {**choice, "text": new} if field == "text" else {**choice, "message": {**message, "content": new}}  # type: ignore[dict-item]
            choices.append(choice)
        return {**response, "choices": choices}


def _requested_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def _content(response: Mapping[str, Any]) -> str:
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    return content if isinstance(content, str) else ""


def _conforms(text: str, schema: Mapping[str, Any]) -> bool:
    import jsonschema  # loaded only by tenants that validate output

    try:
        answer = json.loads(text)
    except ValueError:
        return False
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        return bool(validator.is_valid(answer))
    except jsonschema.SchemaError:
        return True  # a schema Relay cannot read is the provider's to enforce, not a reason to fail the answer


def _invalid() -> RelayError:
    return RelayError(ErrorKind.PROVIDER_ERROR, "The model's answer does not match the requested json_schema.",
                      code=VALIDATION_CODE)  # fmt: skip
