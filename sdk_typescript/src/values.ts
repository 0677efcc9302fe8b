/**
 * google.protobuf.Value <-> plain JSON.
 *
 * Relay's messages use Value for OpenAI's unions (`content`, `stop`,
 * `tool_choice`, `prompt`, `input`, an embedding's vector); these two helpers
 * let callers write and read them as ordinary JSON.
 */
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";

/** Plain JSON → a Value message: `content: toValue("Hello")`. */
export function toValue(json: JsonValue): Value {
  return fromJson(ValueSchema, json);
}

/** A Value message (or its absence) → plain JSON; an unset Value reads as null. */
export function fromValue(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}
