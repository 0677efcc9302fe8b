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

from collections.abc import Callable
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


# A check of one JSON value against one field: ``check(value, depth) -> bool``.
Check = Callable[[Any, int], bool]
# Per message descriptor, built once (``_plan``): each field name's check (None: a field of a
# oneof with siblings, which ParseDict must judge) and the descriptor's JSON (camelCase) names.
# Reading descriptor properties (type, message_type, options, oneof) on every request cost more
# than the walk itself.
_PLANS: dict[Descriptor, tuple[dict[str, Check | None], Any]] = {}


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
    checks, camelcase = _PLANS.get(descriptor) or _plan(descriptor)
    for name, item in value.items():
        check = checks.get(name, _ABSENT)
        if check is _ABSENT:
            if name in camelcase:
                return False  # a JSON name: ParseDict's rules on duplicates apply
            continue  # unknown fields are ignored (and forwarded to the provider)
        if item is None:
            continue  # null: the field stays unset
        if check is None or not check(item, depth):
            return False
    return True


_ABSENT: Any = object()  # not a field of the message (``checks.get`` default)


def _unknown(value: Any, depth: int) -> bool:
    """A field whose JSON form only ParseDict judges."""
    return False


def _plan(descriptor: Descriptor) -> tuple[dict[str, Check | None], Any]:
    checks: dict[str, Check | None] = {}
    for name, field in descriptor.fields_by_name.items():
        oneof = field.containing_oneof
        checks[name] = None if oneof is not None and len(oneof.fields) > 1 else _field(field)
    plan = _PLANS[descriptor] = (checks, descriptor.fields_by_camelcase_name)
    return plan


def _field(field: FieldDescriptor) -> Check:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        entry = _single(field.message_type.fields_by_name["value"])

        def check_map(value: Any, depth: int) -> bool:
            return isinstance(value, dict) and all(v is not None and entry(v, depth + 1) for v in value.values())

        return check_map
    single = _single(field)
    if field.is_repeated:

        def check_list(value: Any, depth: int) -> bool:
            return isinstance(value, list) and all(v is not None and single(v, depth + 1) for v in value)

        return check_list
    return single


def _is_str(value: Any, depth: int) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any, depth: int) -> bool:
    return isinstance(value, bool)


def _is_double(value: Any, depth: int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_float(value: Any, depth: int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= _FLOAT32_MAX


def _is_json_value(value: Any, depth: int) -> bool:
    return _json(value, depth + 1)


def _is_json_struct(value: Any, depth: int) -> bool:
    return isinstance(value, dict) and _json(value, depth + 1)


def _is_json_list(value: Any, depth: int) -> bool:
    return isinstance(value, list) and _json(value, depth + 1)


def _single(field: FieldDescriptor) -> Check:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _is_str
    if kind == FieldDescriptor.TYPE_BOOL:
        return _is_bool
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]

        def is_int(value: Any, depth: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

        return is_int
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _is_double
    if kind == FieldDescriptor.TYPE_FLOAT:
        return _is_float
    if kind == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        message_type = field.message_type
        name = message_type.full_name
        if name == _JSON_VALUE:
            return _is_json_value
        if name == _JSON_STRUCT:
            return _is_json_struct
        if name == _JSON_LIST:
            return _is_json_list
        if name.startswith("google.protobuf."):
            return _unknown  # wrappers, Timestamp, Duration, Any, …: ParseDict's own rules

        def is_message(value: Any, depth: int) -> bool:
            return _message(message_type, value, depth + 1)

        return is_message
    return _unknown  # enums, bytes, groups


def _json(value: Any, depth: int) -> bool:
    """Any JSON fits a Value; only the nesting depth can make ParseDict refuse it."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_json(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_json(v, depth + 1) for v in value)
    return True
