"""JSON Schemas of proto messages, as Envoy's gRPC-JSON transcoder renders them.

Proto3 JSON with `preserve_proto_field_names` (snake_case names), 64-bit
integers as strings, enums as their value names, well-known types in their
proto JSON forms, maps as objects, `optional` fields nullable.  Field
behaviours: REQUIRED → `required`, OUTPUT_ONLY → `readOnly`, INPUT_ONLY →
`writeOnly`.  Proto comments (the descriptor set must carry source info)
become descriptions.  Used by `gen_openapi.py`.
"""

from __future__ import annotations

import copy
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

Json = dict[str, Any]
FD = descriptor_pb2.FieldDescriptorProto
HTTP_BODY = "google.api.HttpBody"

_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_INT32 = {"type": "integer", "format": "int32"}
_UINT32 = {"type": "integer", "format": "uint32", "minimum": 0}
SCALARS: dict[int, Json] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT64: _INT64, FD.TYPE_SINT64: _INT64, FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT64: _UINT64, FD.TYPE_FIXED64: _UINT64,
    FD.TYPE_INT32: _INT32, FD.TYPE_SINT32: _INT32, FD.TYPE_SFIXED32: _INT32,
    FD.TYPE_UINT32: _UINT32, FD.TYPE_FIXED32: _UINT32,
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}  # fmt: skip


def nullable(schema: Json) -> Json:
    """``schema`` that also admits ``null``."""
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema  # already admits anything


# Well-known types in their proto JSON forms, inlined rather than referenced.
# These render as one JSON scalar, so they can also be query parameters.
SCALAR_WKT: dict[str, Json] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$",
                                 "description": "Seconds with an `s` suffix, e.g. `1.5s`."},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths in lowerCamelCase "
                                                                   "(proto JSON), e.g. `name,expireTime`."},
    "google.protobuf.DoubleValue": nullable(SCALARS[FD.TYPE_DOUBLE]),
    "google.protobuf.FloatValue": nullable(SCALARS[FD.TYPE_FLOAT]),
    "google.protobuf.Int64Value": nullable(_INT64), "google.protobuf.UInt64Value": nullable(_UINT64),
    "google.protobuf.Int32Value": nullable(_INT32), "google.protobuf.UInt32Value": nullable(_UINT32),
    "google.protobuf.BoolValue": nullable(SCALARS[FD.TYPE_BOOL]),
    "google.protobuf.StringValue": nullable(SCALARS[FD.TYPE_STRING]),
    "google.protobuf.BytesValue": nullable(SCALARS[FD.TYPE_BYTES]),
}  # fmt: skip
WELL_KNOWN: dict[str, Json] = {
    **SCALAR_WKT,
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "required": ["@type"], "additionalProperties": True,
                            "properties": {"@type": {"type": "string"}}},
}  # fmt: skip

_MAX_QUERY_DEPTH = 4  # nested messages as dotted query names; also stops cycles


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def described(schema: Json, description: str) -> Json:
    """``schema`` with ``description`` in front of any it already has."""
    if not description:
        return schema
    if "description" in schema and "$ref" not in schema:
        description = f"{description}\n\n{schema['description']}"
    return {**schema, "description": description}


def _behaviors(field: FD) -> set[int]:
    return set(field.options.Extensions[field_behavior_pb2.field_behavior])


def is_required(field: FD) -> bool:
    return field_behavior_pb2.REQUIRED in _behaviors(field)


def _comment(location: descriptor_pb2.SourceCodeInfo.Location) -> str:
    text = location.leading_comments or location.trailing_comments
    lines = [line[1:] if line.startswith(" ") else line for line in text.strip("\n").split("\n")]
    return "\n".join(line.rstrip() for line in lines).strip()


class ProtoIndex:
    """A descriptor set indexed by full name, with each element's comment."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        # Keyed by full name: messages, enums, services, `Message.field`,
        # `Enum.VALUE`, `Service.Method`.
        self.comments: dict[str, str] = {}
        for file in descriptor_set.file:
            located = {tuple(loc.path): _comment(loc) for loc in file.source_code_info.location}
            scope = f"{file.package}." if file.package else ""
            # Location paths: 4 = message_type, 5 = enum_type, 6 = service; inside
            # them 2 = field / value / method, 3 = nested_type, 4 = nested enum.
            for i, message in enumerate(file.message_type):
                self._message(scope + message.name, message, (4, i), located)
            for i, enum in enumerate(file.enum_type):
                self._enum(scope + enum.name, enum, (5, i), located)
            for i, service in enumerate(file.service):
                name = scope + service.name
                self.services[name] = service
                self.comments[name] = located.get((6, i), "")
                for j, method in enumerate(service.method):
                    self.comments[f"{name}.{method.name}"] = located.get((6, i, 2, j), "")

    def _message(self, name: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...],
                 located: dict[tuple[int, ...], str]) -> None:  # fmt: skip
        self.messages[name] = message
        self.comments[name] = located.get(path, "")
        for j, field in enumerate(message.field):
            self.comments[f"{name}.{field.name}"] = located.get((*path, 2, j), "")
        for j, nested in enumerate(message.nested_type):
            self._message(f"{name}.{nested.name}", nested, (*path, 3, j), located)
        for j, enum in enumerate(message.enum_type):
            self._enum(f"{name}.{enum.name}", enum, (*path, 4, j), located)

    def _enum(self, name: str, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...],
              located: dict[tuple[int, ...], str]) -> None:  # fmt: skip
        self.enums[name] = enum
        self.comments[name] = located.get(path, "")
        for j, value in enumerate(enum.value):
            self.comments[f"{name}.{value.name}"] = located.get((*path, 2, j), "")

    def map_entry(self, field: FD) -> descriptor_pb2.DescriptorProto | None:
        if field.type != FD.TYPE_MESSAGE or field.label != FD.LABEL_REPEATED:
            return None
        entry = self.messages.get(field.type_name.lstrip("."))
        return entry if entry is not None and entry.options.map_entry else None

    def field_at(self, message: str, dotted: str) -> tuple[str, FD]:
        """(owning message, field) of a dotted field path such as `tenant.id`."""
        owner = message
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            match = [f for f in self.messages[owner].field if f.name == part]
            if not match:
                raise ValueError(f"{message} has no field {dotted!r}")
            if depth == len(parts) - 1:
                return owner, match[0]
            owner = match[0].type_name.lstrip(".")
        raise ValueError(f"empty field path in {message}")


class SchemaBuilder:
    """Turns fields and messages into schemas, collecting components as it goes."""

    def __init__(self, protos: ProtoIndex) -> None:
        self.protos = protos
        self.schemas: dict[str, Json] = {}  # component schemas by full proto name

    def type_schema(self, field: FD) -> Json:
        """The schema of one value of ``field`` (not repeated, not nullable)."""
        if field.type == FD.TYPE_ENUM:
            name = field.type_name.lstrip(".")
            if name == "google.protobuf.NullValue":
                return {"type": "null"}
            self._enum_schema(name)
            return ref(name)
        if field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            return self.message_ref(field.type_name.lstrip("."))
        return copy.deepcopy(SCALARS[field.type])

    def message_ref(self, name: str) -> Json:
        """A reference to message ``name``'s component (inline for well-known types)."""
        if name in WELL_KNOWN:
            return copy.deepcopy(WELL_KNOWN[name])
        if name == HTTP_BODY:
            raise ValueError(f"{HTTP_BODY} has no JSON schema of its own: name its messages in RAW_BODY_MESSAGES")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder first: messages may refer to themselves
            self.schemas[name] = self._message_schema(name)
        return ref(name)

    def message_schema(self, name: str) -> Json:
        """A copy of message ``name``'s component schema, to derive another from."""
        self.message_ref(name)
        return copy.deepcopy(self.schemas[name])

    def field_schema(self, owner: str, field: FD) -> Json:
        """The schema of ``field`` as a property of ``owner``, with its comment."""
        entry = self.protos.map_entry(field)
        if entry is not None:
            schema: Json = {"type": "object", "additionalProperties": self.type_schema(entry.field[1])}
        elif field.label == FD.LABEL_REPEATED:
            schema = {"type": "array", "items": self.type_schema(field)}
        else:
            schema = self.type_schema(field)
            if field.proto3_optional:  # presence tracked: absent (or null) when unset
                schema = nullable(schema)
        notes = [self.protos.comments.get(f"{owner}.{field.name}", "")]
        behaviors = _behaviors(field)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            schema["writeOnly"] = True
        if field_behavior_pb2.IMMUTABLE in behaviors:
            notes.append("Immutable: set on create only.")
        if field.options.deprecated:
            schema["deprecated"] = True
        return described(schema, "\n\n".join(n for n in notes if n))

    def _message_schema(self, name: str) -> Json:
        message = self.protos.messages[name]
        schema: Json = {"type": "object", "properties": {}}
        for field in message.field:
            prop = self.field_schema(name, field)
            if field.HasField("oneof_index") and not field.proto3_optional:
                members = [f"`{f.name}`" for f in message.field
                           if f.HasField("oneof_index") and f.oneof_index == field.oneof_index]  # fmt: skip
                prop = described(prop, f"At most one of {', '.join(members)} is set.")
            schema["properties"][field.name] = prop
        required = sorted(f.name for f in message.field if is_required(f))
        if required:
            schema["required"] = required
        return described(schema, self.protos.comments.get(name, ""))

    def _enum_schema(self, name: str) -> None:
        if name in self.schemas:
            return
        values = self.protos.enums[name].value
        lines = [self.protos.comments.get(name, "")] + [
            f"- `{v.name}`: {self.protos.comments[f'{name}.{v.name}']}"
            for v in values if self.protos.comments.get(f"{name}.{v.name}")
        ]  # fmt: skip
        schema = {"type": "string", "enum": [v.name for v in values]}
        self.schemas[name] = described(schema, "\n".join(line for line in lines if line))

    def query_params(self, message: str, skip: set[str], prefix: str = "", depth: int = 0) -> list[Json]:
        """Query parameters for the fields of ``message`` not in ``skip`` (path and body fields).

        As the transcoder binds them: scalars and repeated scalars by name,
        fields of nested messages as dotted names (`a.b`); maps, repeated
        messages and free-form JSON (Struct, Value) cannot be query parameters.
        """
        params: list[Json] = []
        for field in self.protos.messages[message].field:
            name = prefix + field.name
            if name in skip or self.protos.map_entry(field) is not None:
                continue
            type_name = field.type_name.lstrip(".")
            if field.type == FD.TYPE_MESSAGE and type_name not in SCALAR_WKT:
                if field.label != FD.LABEL_REPEATED and type_name not in WELL_KNOWN and depth < _MAX_QUERY_DEPTH:
                    params += self.query_params(type_name, skip, f"{name}.", depth + 1)
                continue
            schema = self.field_schema(message, field)
            description = schema.pop("description", "")
            param: Json = {"name": name, "in": "query", "schema": schema}
            if is_required(field):
                param["required"] = True
            params.append(described(param, description))
        return params
