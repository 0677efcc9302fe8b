"""docs/openapi.json: a valid OpenAPI 3.1 document that covers every REST route the protos declare."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import gen  # noqa: E402
import gen_openapi  # noqa: E402

WIDE = {
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64,
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads((REPO / gen_openapi.OPENAPI_OUT).read_text())


@pytest.fixture(scope="module")
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    # The checked-in descriptor matches protos/ (test_protos.py checks that).
    return descriptor_pb2.FileDescriptorSet.FromString((REPO / gen.DESCRIPTOR_OUT).read_bytes())


def _http_rules(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[tuple[str, str, str]]:
    """(full method name, verb, OpenAPI path) of every http rule and additional binding."""
    rules = []
    for file in descriptor_set.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                top = method.options.Extensions[annotations_pb2.http]
                for rule in [top, *top.additional_bindings]:
                    verb = rule.WhichOneof("pattern")
                    template = getattr(rule, verb)
                    path = re.sub(r"\{([^}=]+)(=[^}]*)?\}", r"{\1}", template)
                    rules.append((f"{file.package}.{service.name}.{method.name}", verb, path))
    return rules


# --- the checked-in document ------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_the_validator_rejects_a_broken_document(document: dict[str, Any]) -> None:
    """The check above can fail: a dangling reference or a bad parameter is caught."""
    broken = copy.deepcopy(document)
    broken["paths"]["/v1/models/{model}"]["get"]["parameters"][0]["in"] = "body"
    with pytest.raises(OpenAPIValidationError):
        validate(broken)
    dangling = copy.deepcopy(document)
    del dangling["components"]["schemas"]["relay.v1.ListModelsResponse"]
    with pytest.raises(Exception, match="ListModelsResponse"):
        validate(dangling)


def test_every_http_rule_has_an_operation(
    document: dict[str, Any], descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    rules = _http_rules(descriptor_set)
    assert len(rules) >= 10  # the OpenAI facade and the admin API at least
    missing = [(m, v, p) for m, v, p in rules if v not in document["paths"].get(p, {})]
    assert missing == []
    # ... and nothing else, apart from the document itself.
    declared = {(v, p) for _, v, p in rules} | {("get", gen_openapi.DOCUMENT_PATH)}
    documented = {(v, p) for p, ops in document["paths"].items() for v in ops}
    assert documented == declared


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_chat_completions_answers_json_or_an_event_stream(document: dict[str, Any]) -> None:
    op = document["paths"]["/v1/chat/completions"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/relay.v1.ChatCompletionRequest"
    assert "forwarded" in body["description"]
    content = op["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    assert content["application/json"]["schema"]["$ref"].endswith("/relay.v1.ChatCompletion")
    assert content["text/event-stream"]["x-event-data"]["$ref"].endswith("/relay.v1.ChatCompletionChunk")
    assert "data: [DONE]" in content["text/event-stream"]["schema"]["description"]
    assert op["security"] == [{"ApiKey": []}]
    # Embeddings never stream.
    embeddings = document["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]
    assert set(embeddings) == {"application/json"}


def test_64_bit_integers_are_strings(
    document: dict[str, Any], descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    schemas = document["components"]["schemas"]
    checked = 0
    for file in descriptor_set.file:
        for message in file.message_type:
            name = f"{file.package}.{message.name}"
            for field in message.field:
                if field.type in WIDE and name in schemas:
                    prop = schemas[name]["properties"][field.name]
                    prop = prop.get("items", prop) if field.label == field.LABEL_REPEATED else prop
                    assert "string" in prop["type"], f"{name}.{field.name}: {prop}"
                    checked += 1
    assert checked > 0  # Money.micros at least
    assert schemas["relay.admin.v1.Money"]["properties"]["micros"]["type"] == "string"
    assert schemas["relay.v1.ChatCompletion"]["properties"]["created"]["type"] == "integer"  # uint32 stays a number


def test_errors_use_the_shared_schema_with_the_tables_statuses(document: dict[str, Any]) -> None:
    from relay_server.errors import ErrorKind

    responses = document["components"]["responses"]
    statuses = {kind.http_status for kind in ErrorKind}
    assert {400, 401, 402, 404, 413, 422, 429, 502, 503, 504} <= statuses
    assert {f"Error{s}" for s in statuses} <= set(responses)
    for status in statuses:
        schema = responses[f"Error{status}"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    assert "retry-after" in responses["Error429"]["headers"]
    assert "`spend_cap_exceeded`" in responses["Error402"]["description"]
    assert "`unknown_url`" in responses["Error404"]["description"]  # Envoy's own reply
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["429"] == {"$ref": "#/components/responses/Error429"}


def test_admin_schemas_follow_field_behaviour_and_proto_json(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    tenant = schemas["relay.admin.v1.Tenant"]
    assert tenant["properties"]["id"]["readOnly"] is True
    assert tenant["properties"]["create_time"]["format"] == "date-time"
    assert tenant["properties"]["status"]["$ref"].endswith("/relay.admin.v1.TenantStatus")
    assert tenant["properties"]["metadata"]["additionalProperties"] == {"type": "string"}
    assert "TENANT_STATUS_ACTIVE" in schemas["relay.admin.v1.TenantStatus"]["enum"]
    assert set(schemas["relay.admin.v1.CreateTenantRequest"]["required"]) == {"slug", "name", "owner_email"}
    assert schemas["relay.admin.v1.CreateTenantRequest"]["description"] == "Request of CreateTenant."
    assert schemas["relay.v1.ChatCompletionRequest"]["properties"]["temperature"]["type"] == ["number", "null"]


def test_path_query_and_body_split_as_the_transcoder_binds(document: dict[str, Any]) -> None:
    paths = document["paths"]
    # body "*" with a path parameter: the body is the message without it.
    transition = paths["/v1/tenants/{tenant_id}:transition"]["post"]
    body = transition["requestBody"]["content"]["application/json"]["schema"]
    assert "tenant_id" not in body["properties"] and body["required"] == ["status"]
    assert [p["name"] for p in transition["parameters"]] == ["tenant_id"]
    # body "tenant": the rest of the request travels in the query.
    update = paths["/v1/tenants/{tenant.id}"]["patch"]
    assert update["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/relay.admin.v1.Tenant")
    assert {p["name"]: p["in"] for p in update["parameters"]} == {
        "tenant.id": "path", "update_mask": "query", "request_id": "query"}  # fmt: skip
    # GET: scalars as query parameters, nested messages as dotted names.
    usage = {p["name"]: p for p in paths["/v1/usage"]["get"]["parameters"]}
    assert {"start_date.year", "start_date.month", "start_date.day", "group_by"} <= set(usage)
    assert all(p["in"] == "query" for p in usage.values())
    assert paths["/v1/openapi.json"]["get"]["security"] == []


# --- the generator on protos of its own ------------------------------------------------

EXTRA_PROTO = """
syntax = "proto3";
package gentest.v1;
import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/api/httpbody.proto";

// Things.
service ThingService {
  // Get a thing.
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {
      get: "/v1/{name=things/**}"
      additional_bindings { get: "/v1/legacy/{name}" }
    };
  }
  %(extra)s
}

// A thing.
message Thing {
  // Its resource name.
  string name = 1 [(google.api.field_behavior) = OUTPUT_ONLY];
  sint64 weight = 2;
  repeated fixed64 ids = 3;
  map<string, int64> counts = 4;
  optional int32 rank = 5;
  oneof shape { string round = 6; string square = 7; }
}

message Filter {
  repeated string tags = 1;
  uint64 min_weight = 2;
}

message GetThingRequest {
  string name = 1 [(google.api.field_behavior) = REQUIRED];
  Filter filter = 2;
  map<string, string> labels = 3;
  repeated Filter many = 4;
}
"""


def _document_for(tmp_path: Path, extra: str) -> dict[str, Any]:
    proto_root = tmp_path / "protos"
    (proto_root / "gentest/v1").mkdir(parents=True)
    (proto_root / "gentest/v1/thing.proto").write_text(EXTRA_PROTO % {"extra": extra})
    out = tmp_path / "thing.pb"
    includes = [f"-I{d}" for d in [str(proto_root), *gen._include_dirs()[1:]]]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *includes, "--include_imports", "--include_source_info",
         f"--descriptor_set_out={out}", "gentest/v1/thing.proto"],
        check=True, capture_output=True,
    )  # fmt: skip
    return gen_openapi.build_document(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()))


def test_generator_renders_unseen_protos_generically(tmp_path: Path) -> None:
    document = _document_for(tmp_path, "")
    validate(document)
    ops = {op["operationId"]: (path, op) for path, item in document["paths"].items() for op in item.values()}
    path, op = ops["ThingService_GetThing"]
    assert path == "/v1/{name}" and op["summary"] == "Get a thing"
    assert "several path segments" in op["parameters"][0]["description"]
    assert ops["ThingService_GetThing_2"][0] == "/v1/legacy/{name}"
    assert op["security"] == gen_openapi.ADMIN_SECURITY  # not the data-plane package
    query = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}
    # Maps and repeated messages cannot be query parameters; nested scalars can.
    assert query == {"filter.tags": {"type": "array", "items": {"type": "string"}},
                     "filter.min_weight": {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}}  # fmt: skip
    thing = document["components"]["schemas"]["gentest.v1.Thing"]["properties"]
    assert thing["name"]["readOnly"] is True and thing["name"]["description"] == "Its resource name."
    assert thing["weight"]["type"] == "string"
    assert thing["ids"]["items"]["type"] == "string"
    assert thing["counts"]["additionalProperties"]["type"] == "string"
    assert thing["rank"]["type"] == ["integer", "null"]
    assert "At most one of `round`, `square`" in thing["round"]["description"]
    again = _document_for(tmp_path / "again", "")
    assert gen_openapi.render(again) == gen_openapi.render(document)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # A raw-body RPC the table does not describe.
        ('rpc Upload(google.api.HttpBody) returns (Thing) { option (google.api.http) = {post: "/v1/up" body: "*"}; }',
         "RAW_BODY_MESSAGES"),
        ('rpc Again(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/legacy/{name}"}; }',
         "two RPCs bind GET /v1/legacy/{name}"),
        ('rpc Doc(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/openapi.json"}; }',
         "Envoy serves itself"),
        ('rpc Odd(GetThingRequest) returns (Thing) {'
         ' option (google.api.http) = {custom: {kind: "LINK" path: "/v1/x"}}; }',
         "no HTTP method 'link'"),
        ('rpc Bad(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/x/{nope}"}; }',
         "has no field 'nope'"),
    ],
)  # fmt: skip
def test_generator_refuses_what_it_cannot_document(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _document_for(tmp_path, extra)
