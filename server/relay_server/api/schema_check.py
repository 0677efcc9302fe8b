"""A quick "certainly valid" check of a JSON body against a request proto.

``json_format.ParseDict`` is the authority on types (its errors become the 400
messages), but it builds a whole message in pure Python: ~17 µs for a
one-message chat body, a few percent of a request's CPU.  Nearly every body is
plainly well typed, so ``SchemaCheck`` walks the body against the descriptor
first and says ``True`` only when ParseDict would certainly accept it.  Anything
it is unsure of (enums, bytes, camelCase names, numbers given as strings, deep
nesting, …) answers ``False`` and the caller runs ParseDict, so the error a
client sees never comes from here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
# ParseDict stops at 100 levels; stay well inside it.
_MAX_DEPTH = 40
_JSON_VALUE = "google.protobuf.Value"
_JSON_STRUCT = "google.protobuf.Struct"
_JSON_LIST = "google.protobuf.ListValue"


class SchemaCheck:
    def __init__(self, descriptor: Descriptor) -> None:
        self._descriptor = descriptor

    def certainly_valid(self, body: Any) -> bool:
        try:
            return _message(self._descriptor, body, 0)
        except RecursionError:
            return False


def _message(descriptor: Descriptor, value: Any, depth: int) -> bool:
    if not isinstance(value, dict) or depth > _MAX_DEPTH:
        return False
    fields = descriptor.fields_by_name
    for name, item in value.items():
        field = fields.get(name)
        if field is None:
            if name in descriptor.fields_by_camelcase_name:
                return False  # a JSON name: ParseDict's rules on duplicates apply
            continue  # unknown fields are ignored (and forwarded to the provider)
        if item is None:
            continue  # null: the field stays unset
        if field.containing_oneof is not None and len(field.containing_oneof.fields) > 1:
            return False
        if not _field(field, item, depth):
            return False
    return True


def _field(field: FieldDescriptor, value: Any, depth: int) -> bool:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            return False
        value_field = field.message_type.fields_by_name["value"]
        return all(v is not None and _single(value_field, v, depth + 1) for v in value.values())
    if field.is_repeated:
        return isinstance(value, list) and all(v is not None and _single(field, v, depth + 1) for v in value)
    return _single(field, value, depth)


def _single(field: FieldDescriptor, value: Any, depth: int) -> bool:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return isinstance(value, str)
    if kind == FieldDescriptor.TYPE_BOOL:
        return isinstance(value, bool)
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= _FLOAT32_MAX
    if kind == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        name = field.message_type.full_name
        if name == _JSON_VALUE:
            return _json(value, depth + 1)
        if name == _JSON_STRUCT:
            return isinstance(value, dict) and _json(value, depth + 1)
        if name == _JSON_LIST:
            return isinstance(value, list) and _json(value, depth + 1)
        if name.startswith("google.protobuf."):
            return False  # wrappers, Timestamp, Duration, Any, …: ParseDict's own rules
        return _message(field.message_type, value, depth + 1)
    return False  # enums, bytes, groups


def _json(value: Any, depth: int) -> bool:
    """Any JSON fits a Value; only the nesting depth can make ParseDict refuse it."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_json(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_json(v, depth + 1) for v in value)
    return True
