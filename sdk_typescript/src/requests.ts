/**
 * Typed requests from OpenAI-style JSON, for `RelayClient.chat`/`chatStream`/`embed`.
 *
 * The arguments are decoded with the proto3 JSON mapping (the one `toValue`
 * uses for the `Value` unions), which accepts OpenAI's snake_case names and
 * the camelCase ones alike.  Parameters the typed schema does not know (newer
 * OpenAI parameters, provider extras such as `top_k`) travel in `extra_body`,
 * which the server merges into the provider request — as in the Python SDK.
 */
import { fromJson, type DescMessage, type JsonObject, type JsonValue, type MessageShape } from "@bufbuild/protobuf";

import { ChatCompletionRequestSchema } from "./gen/relay/v1/chat_pb.js";
import { EmbeddingRequestSchema } from "./gen/relay/v1/embeddings_pb.js";

/** One OpenAI-style chat message: `{ role: "user", content: "Hi" }`. */
export interface ChatMessageJson {
  role: string;
  /** A string, an array of content parts, or null. */
  content?: JsonValue;
  [field: string]: JsonValue | undefined;
}

/** OpenAI parameters as JSON (`temperature: 0.2`, `max_completion_tokens: 64`, `top_k: 40`, …). */
export type RequestParams = Record<string, JsonValue | undefined>;

/** `params` without its undefined entries (JSON has no undefined). */
function defined(params: Record<string, JsonValue | undefined>): JsonObject {
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined) {
      out[key] = value;
    }
  }
  return out;
}

function asObject(value: JsonValue | undefined, what: string): JsonObject {
  if (value === undefined || value === null) {
    return {};
  }
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`${what} must be a JSON object`);
  }
  return value;
}

/** Decode `fields` into `schema`, moving names the schema lacks into `extra_body`. */
function withExtraBody<Desc extends DescMessage>(schema: Desc, fields: JsonObject): MessageShape<Desc> {
  const known: JsonObject = {};
  let extra: JsonObject = {};
  for (const [key, value] of Object.entries(fields)) {
    const field = schema.fields.find((f) => f.name === key || f.jsonName === key);
    if (field === undefined) {
      extra[key] = value;
    } else if (field.name === "extra_body") {
      extra = { ...asObject(value, key), ...extra }; // an explicit parameter wins over the same key in extra_body
    } else {
      known[field.jsonName] = value;
    }
  }
  if (Object.keys(extra).length > 0) {
    known["extraBody"] = extra;
  }
  try {
    return fromJson(schema, known);
  } catch (err) {
    throw new TypeError(`invalid ${schema.name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** A ChatCompletionRequest from OpenAI-style messages and parameters; `model` and `messages` win over `params`. */
export function chatRequest(model: string, messages: readonly ChatMessageJson[], params: RequestParams = {}) {
  if (!Array.isArray(messages)) {
    throw new TypeError("messages must be an array of chat messages");
  }
  return withExtraBody(ChatCompletionRequestSchema, { ...defined(params), model, messages: messages.map(defined) });
}

/** An EmbeddingRequest; `input` is a string, a list of strings, or token ids, as in OpenAI's API. */
export function embeddingRequest(model: string, input: JsonValue, params: RequestParams = {}) {
  return withExtraBody(EmbeddingRequestSchema, { ...defined(params), model, input });
}
