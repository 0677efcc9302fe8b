"""Generate `docs/openapi.json`: the OpenAPI 3.1 document of Relay's REST port.

Every `google.api.http` rule of every service becomes an operation, its
schemas rendered as Envoy's gRPC-JSON transcoder renders JSON
(`openapi_schema.py`).  What the descriptors cannot say comes from the small
tables below: the JSON that `google.api.HttpBody` RPCs carry, and which bearer
credentials each package accepts.  Error responses come from the server's
closed error table (`relay_server.errors`) plus the replies Envoy makes itself.

`scripts/gen.py` calls `write_openapi` as the last step of `make gen`; the
drift test (tests/unit/test_protos.py) compares the checked-in file with a
fresh generation.

Usage: python scripts/gen_openapi.py [--root DIR]   (DIR defaults to the repository)
"""

from __future__ import annotations

import argparse
import http
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

# scripts/ is on sys.path whenever this runs: as a script, or imported by gen.py.
from openapi_schema import HTTP_BODY, Json, ProtoIndex, SchemaBuilder, described, ref

REPO = Path(__file__).resolve().parent.parent
OPENAPI_OUT = Path("docs/openapi.json")
# Served by Envoy itself (envoy/envoy.yaml.tmpl), without authentication.
DOCUMENT_PATH = "/v1/openapi.json"

_OPENAI_SSE = (
    "Server-sent events: one `data: {JSON}` frame (the JSON on one line, then a blank line) per chunk, each "
    "chunk following the `x-event-data` schema; with `stream_options.include_usage` the last chunk carries "
    "`usage`. The stream ends with `data: [DONE]`. A failure after the first frame arrives as a "
    '`data: {"error": {...}}` frame (the `Error` schema) and the stream ends.'
)
_ANTHROPIC_SSE = (
    "Server-sent events as Anthropic sends them: `event: <type>` then `data: {JSON}` per event (message_start, "
    "content_block_start, ping, content_block_delta, content_block_stop, message_delta, message_stop). A failure "
    'after the first event arrives as `event: error` with `{"type": "error", "error": {...}}` and the stream ends.'
)
_THREAD_SSE = (
    "Server-sent events `id: N` + `data: {JSON}` per event (thread.message.created, thread.message.delta, "
    "then thread.message.completed or thread.message.failed), ending with `data: [DONE]`. Events are buffered: "
    "after a lost connection, GET the message's `/stream` with `starting_after` = the last id seen to receive "
    "exactly the missed events."
)

_RESPONSES_SSE = (
    "Server-sent events `event: <type>` + `data: {JSON}` (response.created, response.in_progress, "
    "output_item.added/done, content_part.added/done, output_text.delta/done, function_call_arguments.delta/done, "
    "then response.completed, response.incomplete or response.failed), each with its `sequence_number`."
)


@dataclass(frozen=True)
class RawBody:
    """What the JSON of a `google.api.HttpBody` RPC means."""

    request: str | None = None  # the request body's message; None: the RPC's own (typed) request
    response: str | None = None  # the `application/json` answer, if there is one
    event_stream: str | None = None  # how the `text/event-stream` answer is framed, if there is one
    event_data: str | None = None  # the message each event's `data:` JSON follows, if known


# HttpBody RPCs pass raw bytes, so that request fields newer than the schema
# reach the provider and server-sent events keep OpenAI's exact framing; their
# descriptors therefore say only "bytes".  The server reads and writes these
# messages' JSON in them, so this table says what the bytes mean.  An explicit
# table, not a naming convention: a new HttpBody RPC missing here fails
# generation instead of shipping undocumented.
RAW_BODY_MESSAGES: dict[str, RawBody] = {
    "relay.v1.OpenAIService.CreateChatCompletion": RawBody(
        "relay.v1.ChatCompletionRequest", "relay.v1.ChatCompletion", _OPENAI_SSE, "relay.v1.ChatCompletionChunk"
    ),
    "relay.v1.OpenAIService.CreateCompletion": RawBody(
        "relay.v1.CompletionRequest", "relay.v1.Completion", _OPENAI_SSE, "relay.v1.Completion"
    ),
    "relay.v1.OpenAIService.CreateEmbedding": RawBody("relay.v1.EmbeddingRequest", "relay.v1.EmbeddingList"),
    "relay.v1.AnthropicService.CreateMessage": RawBody(
        "relay.v1.AnthropicMessageRequest", "relay.v1.AnthropicMessage", _ANTHROPIC_SSE, "relay.v1.AnthropicStreamEvent"
    ),
    "relay.v1.AnthropicService.CountTokens": RawBody("relay.v1.AnthropicMessageRequest", "relay.v1.AnthropicTokenCount"),
    "relay.v1.AnthropicService.ListModels": RawBody(None, "relay.v1.AnthropicModelList"),
    "relay.v1.AnthropicService.GetModel": RawBody(None, "relay.v1.AnthropicModel"),
    "relay.v1.ThreadService.SendMessage": RawBody(None, "relay.v1.SendMessageResponse", _THREAD_SSE),
    "relay.v1.ThreadService.StreamMessage": RawBody(None, None, _THREAD_SSE),
    "relay.v1.ResponsesService.CreateResponse": RawBody(
        "relay.v1.CreateResponseRequest", "relay.v1.Response", _RESPONSES_SSE, "relay.v1.ResponseStreamEvent"
    ),
    "relay.v1.ResponsesService.GetResponse": RawBody(None, "relay.v1.Response"),
    "relay.v1.ResponsesService.DeleteResponse": RawBody(None, "relay.v1.DeletedResponse"),
    "relay.v1.ResponsesService.CancelResponse": RawBody(None, "relay.v1.Response"),
    "relay.v1.ResponsesService.ListInputItems": RawBody(None, "relay.v1.InputItemList"),
}

# All three are `Authorization: Bearer …`; the server tells them apart by shape.
SECURITY_SCHEMES: Json = {
    "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "rly_live_sk_… | rly_test_sk_…",
               "description": "A tenant's API key. `rly_test_sk_` keys get deterministic mock answers and never "
                              "reach a provider. The admin API accepts management-scope keys only."},
    "AdminToken": {"type": "http", "scheme": "bearer",
                   "description": "The platform operator token (`RELAY_ADMIN_TOKEN`): every tenant."},
    "Jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A dashboard user's token (HS256): one tenant, with the permissions of the user's role."},
}  # fmt: skip
# The data plane (inference, threads) takes API keys only; every other package is the control plane.
DATA_PLANE_PACKAGE = "relay.v1"
DATA_PLANE_SECURITY = [{"ApiKey": []}]
ADMIN_SECURITY = [{"AdminToken": []}, {"Jwt": []}, {"ApiKey": []}]

# Error codes Envoy produces itself (local_reply_config in envoy/envoy.yaml.tmpl).
ENVOY_ERROR_CODES: dict[int, list[tuple[str, str]]] = {
    400: [("invalid_json", "invalid_request_error")],
    404: [("unknown_url", "invalid_request_error")],
    413: [("request_too_large", "invalid_request_error")],
    503: [("service_unavailable", "server_error")],
}

ERROR_SCHEMA: Json = {
    "type": "object",
    "description": "OpenAI's error shape, for every failure: the server's, and Envoy's own (unknown path, bad JSON, "
                   "body too large, server down).",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string", "description": "For people; do not parse."},
        "type": {"type": "string", "description": "The OpenAI error type, e.g. `invalid_request_error`."},
        "param": {"type": ["string", "null"], "description": "The request parameter at fault, if any."},
        "code": {"type": ["string", "null"], "description": "Stable, machine-readable code (listed per response)."},
        "details": {"type": "object", "additionalProperties": True,
                    "description": "Structured context when there is some: limits, quotas, windows."},
    }}},
}  # fmt: skip
_HEADERS: Json = {
    "RequestId": {"description": "Relay's id of the request (`req_…`); quote it when reporting a problem.",
                  "schema": {"type": "string"}},
    "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 0}},
    "ShouldRetry": {"description": "`false` when a retry cannot help (OpenAI's SDKs honour it).",
                    "schema": {"type": "string", "enum": ["true", "false"]}},
}  # fmt: skip
_REQUEST_ID = {"x-request-id": {"$ref": "#/components/headers/RequestId"}}

_PATH_VAR = re.compile(r"\{([A-Za-z0-9_.]+)(?:=([^}]*))?\}")
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _error_table() -> dict[int, list[tuple[str, str, bool]]]:
    """{status: [(code, type, retryable)]} from the server's error table and Envoy's replies."""
    try:
        from relay_server.errors import ErrorKind
    except ImportError:  # the server package is not installed: use the tree's
        sys.path.insert(0, str(REPO / "server"))
        from relay_server.errors import ErrorKind
    table: dict[int, set[tuple[str, str, bool]]] = {}
    for kind in ErrorKind:
        table.setdefault(kind.http_status, set()).add((kind.value.code, kind.value.type, kind.value.retryable))
    for status, codes in ENVOY_ERROR_CODES.items():
        table.setdefault(status, set()).update((code, etype, status >= 500) for code, etype in codes)
    return {status: sorted(table[status]) for status in sorted(table)}


def _error_responses(table: dict[int, list[tuple[str, str, bool]]]) -> Json:
    responses: Json = {}
    for status, kinds in table.items():
        headers = dict(_REQUEST_ID)
        if status == 429:
            headers["retry-after"] = {"$ref": "#/components/headers/RetryAfter"}
        if any(not retryable for _, _, retryable in kinds):
            headers["x-should-retry"] = {"$ref": "#/components/headers/ShouldRetry"}
        codes = "\n".join(f"- `{code}` ({etype})" for code, etype, _ in kinds)
        responses[f"Error{status}"] = {
            "description": f"{http.HTTPStatus(status).phrase}. `error.code` is one of:\n\n{codes}",
            "headers": headers,
            "content": {"application/json": {"schema": ref("Error")}},
        }
    return responses


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError(f"http rule without a pattern: {rule}")
    verb, template = (rule.custom.kind.lower(), rule.custom.path) if kind == "custom" else (kind, getattr(rule, kind))
    if verb not in _METHODS:
        raise ValueError(f"OpenAPI has no HTTP method {verb!r}")
    return verb, template


def _path_template(template: str) -> tuple[str, dict[str, str]]:
    """The OpenAPI path of an http rule template and its {field path: segment pattern}."""
    fields = {m.group(1): m.group(2) or "*" for m in _PATH_VAR.finditer(template)}
    return _PATH_VAR.sub(lambda m: "{" + m.group(1) + "}", template), fields


class _Operations:
    """Turns http rules into OpenAPI operations."""

    def __init__(self, protos: ProtoIndex, error_statuses: list[int]) -> None:
        self.protos = protos
        self.schemas = SchemaBuilder(protos)
        self.error_refs = {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in error_statuses}

    def of_method(self, service: str, method: descriptor_pb2.MethodDescriptorProto) -> list[tuple[str, str, Json]]:
        """(path, verb, operation) for the method's http rule and its additional bindings."""
        if not method.options.HasExtension(annotations_pb2.http):
            return []
        rule = method.options.Extensions[annotations_pb2.http]
        found = []
        for n, binding in enumerate([rule, *rule.additional_bindings]):
            verb, template = _verb_and_template(binding)
            path, path_fields = _path_template(template)
            op_id = f"{service.rsplit('.', 1)[-1]}_{method.name}" + (f"_{n + 1}" if n else "")
            found.append((path, verb, self._operation(service, method, binding, path_fields, op_id)))
        return found

    def _operation(self, service: str, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule,
                   path_fields: dict[str, str], op_id: str) -> Json:  # fmt: skip
        full = f"{service}.{method.name}"
        comment = self.protos.comments.get(full, "")
        request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
        first_sentence = comment.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".")
        op: Json = {
            "operationId": op_id,
            "summary": first_sentence or method.name,
            "tags": [service.rsplit(".", 1)[-1]],
            "security": DATA_PLANE_SECURITY if service.rsplit(".", 1)[0] == DATA_PLANE_PACKAGE else ADMIN_SECURITY,
            "responses": dict(self.error_refs),
        }
        if comment:
            op["description"] = comment
        raw = RAW_BODY_MESSAGES.get(full)
        if HTTP_BODY in (request, response) and raw is None:
            raise ValueError(f"{full} carries {HTTP_BODY}: say what its JSON is in RAW_BODY_MESSAGES")
        if raw is not None and (request == HTTP_BODY) != (raw.request is not None):
            raise ValueError(f"RAW_BODY_MESSAGES[{full!r}].request must be set exactly when the request is raw")
        params = [self._path_param(request, name, pattern) for name, pattern in path_fields.items()]
        if request == HTTP_BODY:
            assert raw is not None and raw.request is not None
            note = ("Fields not in this schema are forwarded to the provider unchanged, so newer OpenAI "
                    "parameters work without a Relay upgrade.")  # fmt: skip
            op["requestBody"] = _json_body(described(self.schemas.message_ref(raw.request), note))
        else:
            if rule.body:
                op["requestBody"] = _json_body(self._body(request, rule.body, path_fields))
            if rule.body != "*":
                skip = set(path_fields) | ({rule.body} if rule.body else set())
                params += self.schemas.query_params(request, skip)
        if params:
            op["parameters"] = params
        if response == HTTP_BODY:
            assert raw is not None
            op["responses"]["200"] = self._raw_response(raw)
        else:
            op["responses"]["200"] = self._response(response, rule.response_body, method.server_streaming)
        return op

    def _path_param(self, request: str, name: str, pattern: str) -> Json:
        owner, field = self.protos.field_at(request, name)
        notes = [self.protos.comments.get(f"{owner}.{field.name}", "")]
        if "**" in pattern:
            notes.append(f"Matches `{pattern}`: may span several path segments.")
        param = {"name": name, "in": "path", "required": True, "schema": self.schemas.type_schema(field)}
        return described(param, "\n\n".join(n for n in notes if n))

    def _body(self, request: str, body: str, path_fields: dict[str, str]) -> Json:
        if body != "*":
            return self.schemas.field_schema(*self.protos.field_at(request, body))
        top_level = [name for name in path_fields if "." not in name]
        if not top_level:
            return self.schemas.message_ref(request)
        # Some fields travel in the path: the body is the message without them.
        schema = self.schemas.message_schema(request)
        for name in top_level:
            schema["properties"].pop(name, None)
        required = [name for name in schema.pop("required", []) if name not in top_level]
        if required:
            schema["required"] = required
        return schema

    def _response(self, message: str, response_body: str, streaming: bool) -> Json:
        if response_body:
            schema = self.schemas.field_schema(*self.protos.field_at(message, response_body))
        else:
            schema = self.schemas.message_ref(message)
        if streaming:  # the transcoder renders a typed stream as one JSON array
            schema = {"type": "array", "items": schema}
        return {"description": "OK", "headers": dict(_REQUEST_ID), "content": {"application/json": {"schema": schema}}}

    def _raw_response(self, raw: RawBody) -> Json:
        content: Json = {}
        if raw.response is not None:
            content["application/json"] = {"schema": self.schemas.message_ref(raw.response)}
        if raw.event_stream is not None:
            stream: Json = {"schema": {"type": "string", "description": raw.event_stream}}
            if raw.event_data is not None:
                # OpenAPI 3.1 has no keyword for the schema of each event; this
                # extension names it (and keeps the message among the components).
                stream["x-event-data"] = self.schemas.message_ref(raw.event_data)
            content["text/event-stream"] = stream
        if not content:
            raise ValueError(f"a RAW_BODY_MESSAGES entry answers nothing: {raw}")
        description = "OK: one JSON body, or an event stream when the request sets `stream: true`."
        if len(content) == 1:
            description = "OK"
        return {"description": description, "headers": dict(_REQUEST_ID), "content": content}


def _json_body(schema: Json) -> Json:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def build_document(descriptor_set: descriptor_pb2.FileDescriptorSet) -> Json:
    """The OpenAPI 3.1 document of every ``google.api.http`` rule in ``descriptor_set``."""
    protos = ProtoIndex(descriptor_set)
    errors = _error_table()
    operations = _Operations(protos, list(errors))
    paths: dict[str, Json] = {}
    tags: list[Json] = []
    for service_name in sorted(protos.services):
        found = [op for method in protos.services[service_name].method
                 for op in operations.of_method(service_name, method)]  # fmt: skip
        if found:
            tags.append(described({"name": service_name.rsplit(".", 1)[-1]}, protos.comments.get(service_name, "")))
        for path, verb, op in found:
            if verb in paths.setdefault(path, {}):
                raise ValueError(f"two RPCs bind {verb.upper()} {path}")
            paths[path][verb] = op
    if "get" in paths.setdefault(DOCUMENT_PATH, {}):
        raise ValueError(f"an RPC binds GET {DOCUMENT_PATH}, which Envoy serves itself")
    paths[DOCUMENT_PATH]["get"] = {
        "operationId": "GetOpenApiDocument", "summary": "This document", "tags": ["Meta"], "security": [],
        "responses": {"200": {"description": "The OpenAPI document of the REST API.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }  # fmt: skip
    tags.append({"name": "Meta", "description": "About the API itself."})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Relay API", "version": "v1", "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
                 "description": "Relay's REST API: OpenAI-compatible inference, threads, and the admin API. "
                                "Generated from the protos by scripts/gen_openapi.py; do not edit."},
        "servers": [{"url": "/", "description": "The Relay REST port this document was fetched from."}],
        "security": ADMIN_SECURITY,
        "tags": tags,
        "paths": paths,
        "components": {"schemas": {**operations.schemas.schemas, "Error": ERROR_SCHEMA},
                       "responses": _error_responses(errors), "headers": _HEADERS,
                       "securitySchemes": SECURITY_SCHEMES},
    }  # fmt: skip


def render(document: Json) -> str:
    """Deterministic text: sorted keys, two-space indents, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_openapi(descriptor_set_path: Path, out: Path) -> None:
    """Write the document of a descriptor set made with ``--include_imports --include_source_info``."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set_path.read_bytes())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(build_document(descriptor_set)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO)
    args = parser.parse_args()
    import gen

    with tempfile.TemporaryDirectory() as tmp:
        descriptor = Path(tmp) / "openapi.pb"
        gen._protoc(["--include_imports", "--include_source_info", f"--descriptor_set_out={descriptor}",
                     *gen.proto_files()])  # fmt: skip
        write_openapi(descriptor, args.root / OPENAPI_OUT)
    print(f"wrote {args.root / OPENAPI_OUT}")


if __name__ == "__main__":
    main()
