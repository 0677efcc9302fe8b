/**
 * The SDK against a real Relay (server + Postgres + Redis), started by
 * tests/e2e/test_typescript_sdk.py, which passes its address and credentials in
 * RELAY_GRPC_ADDR, RELAY_TEST_KEY and RELAY_ADMIN_TOKEN.  Without them (a bare
 * `npm test`) these tests are skipped.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import type { MessageInitShape } from "@bufbuild/protobuf";

import {
  AuthenticationError,
  BadRequestError,
  Code,
  PaymentRequiredError,
  PermissionDeniedError,
  RateLimitError,
  RelayClient,
  SpendCapExceededError,
  fromValue,
  relay,
  toValue,
} from "../src/index.js";

const target = process.env["RELAY_GRPC_ADDR"];
const apiKey = process.env["RELAY_TEST_KEY"];
const adminToken = process.env["RELAY_ADMIN_TOKEN"];
const skip = target && apiKey && adminToken ? false : "set RELAY_GRPC_ADDR, RELAY_TEST_KEY and RELAY_ADMIN_TOKEN to run against a real Relay";

type ChatRequest = MessageInitShape<typeof relay.ChatCompletionRequestSchema>;

function request(init: ChatRequest = {}): ChatRequest {
  return { model: "gpt-4o-mini", messages: [{ role: "user", content: toValue("Say hello") }], ...init };
}

describe("RelayClient against a real Relay", { skip }, () => {
  // maxRetries 0: a test must see the first answer, not a retried one.
  const client = new RelayClient({ target: target ?? "", apiKey, adminToken, maxRetries: 0, timeoutMs: 30_000 });
  after(() => client.close());

  it("creates a typed chat completion", async () => {
    const reply = await client.inference.createChatCompletion(request({ seed: 7n }));
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, "gpt-4o-mini");
    assert.equal(reply.choices[0]?.message?.role, "assistant");
    assert.ok((reply.choices[0]?.message?.content ?? "").length > 0);
    assert.ok(reply.usage !== undefined && reply.usage.totalTokens === reply.usage.promptTokens + reply.usage.completionTokens);
  });

  it("streams a completion whose chunks add up to the unary answer, usage last", async () => {
    const unary = await client.inference.createChatCompletion(request());
    const chunks: relay.ChatCompletionChunk[] = [];
    for await (const chunk of client.inference.streamChatCompletion(request({ streamOptions: { includeUsage: true } }))) {
      chunks.push(chunk);
    }
    assert.ok(chunks.length > 2);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.equal(text, unary.choices[0]?.message?.content);
    const last = chunks.at(-1);
    assert.equal(last?.choices.length, 0);
    assert.equal(last?.usage?.totalTokens, unary.usage?.totalTokens);
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === undefined), "only the last chunk carries usage");
  });

  it("creates embeddings", async () => {
    const reply = await client.inference.createEmbedding({
      model: "text-embedding-3-small", input: toValue(["a", "b"]), encodingFormat: "float", dimensions: 4,
    });
    assert.equal(reply.data.length, 2);
    const vector = fromValue(reply.data[0]?.embedding);
    assert.ok(Array.isArray(vector) && vector.length === 4 && vector.every((x) => typeof x === "number"));
    assert.ok((reply.usage?.promptTokens ?? 0) > 0);
  });

  it("lists the models the key may call", async () => {
    const list = await client.models.listModels({});
    assert.equal(list.object, "list");
    const ids = list.data.map((m) => m.id);
    assert.ok(ids.includes("gpt-4o-mini"), ids.join(","));
  });

  it("maps a bad key to AuthenticationError with Relay's error details", async () => {
    const bad = new RelayClient({ target: target ?? "", apiKey: `rly_test_sk_${"z".repeat(43)}`, maxRetries: 0 });
    try {
      const err = await bad.inference.createChatCompletion(request()).catch((e: unknown) => e);
      assert.ok(err instanceof AuthenticationError, String(err));
      assert.equal(err.code, Code.Unauthenticated);
      assert.equal(err.reason, "invalid_api_key");
      assert.equal(err.httpStatus, 401);
      assert.ok(err.requestId, "a request id for support");
      assert.equal(err.body?.code, "invalid_api_key");
      assert.equal(err.body?.type, "invalid_request_error");
    } finally {
      bad.close();
    }
  });

  it("maps a spend cap to SpendCapExceededError", async () => {
    const err = await client.inference
      .createChatCompletion(request(), { headers: { "x-relay-test-error": "spend_cap_exceeded" } })
      .catch((e: unknown) => e);
    assert.ok(err instanceof SpendCapExceededError, String(err));
    assert.ok(err instanceof PaymentRequiredError);
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal(err.httpStatus, 402);
    assert.equal(err.type, "insufficient_quota");
    assert.equal(err.reason, "spend_cap_exceeded");
    assert.equal(err.shouldRetry, false, "Relay marks a 402 terminal");
  });

  it("maps a rate limit to RateLimitError with retryAfter", async () => {
    const err = await client.inference
      .createChatCompletion(request(), { headers: { "x-relay-test-error": "rate_limit_exceeded" } })
      .catch((e: unknown) => e);
    assert.ok(err instanceof RateLimitError, String(err));
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.retryAfter, 1);
    assert.equal(err.httpStatus, 429);
    assert.equal(err.reason, "rate_limit_exceeded");
  });

  it("raises a stream's failure from the iterator", async () => {
    const stream = client.inference.streamChatCompletion(request(), { headers: { "x-relay-test-error": "rate_limit_exceeded" } });
    await assert.rejects(async () => {
      for await (const _chunk of stream) {
        // the failure comes before any chunk
      }
    }, RateLimitError);
  });

  it("rejects a bad test header with BadRequestError", async () => {
    const err = await client.inference
      .createChatCompletion(request(), { headers: { "x-relay-test-error": "no_such_error" } })
      .catch((e: unknown) => e);
    assert.ok(err instanceof BadRequestError, String(err));
    assert.equal(err.httpStatus, 400);
  });

  it("lists the admin catalog with the admin token, page by page", async () => {
    const first = await client.catalog.listCatalogModels({ pageSize: 5 });
    assert.equal(first.models.length, 5);
    assert.ok(first.nextPageToken);
    const rest = await client.catalog.listCatalogModels({ pageSize: 1000, pageToken: first.nextPageToken });
    const names = [...first.models, ...rest.models].map((m) => m.relayName);
    assert.ok(names.includes("gpt-4o-mini"));
    assert.equal(new Set(names).size, names.length, "pages do not overlap");
  });

  it("lists a page of the demo tenant's API keys as typed objects", async () => {
    const page = await client.apiKeys.listApiKeys({ tenantId: "ten_demo", pageSize: 1 });
    assert.equal(page.apiKeys.length, 1);
    const key = page.apiKeys[0]!;
    assert.equal(key.tenantId, "ten_demo");
    assert.equal(key.keyPrefix, "rly_test_");
    assert.equal(key.keyHint, apiKey?.slice(-4));
    assert.ok(key.id.startsWith("key_"));
  });

  it("iterates the demo tenant's keys one page at a time", async () => {
    const pages = [];
    for await (const page of client.paginate(client.apiKeys.listApiKeys, { tenantId: "ten_demo", pageSize: 1 }).pages()) {
      assert.ok(page.apiKeys.length <= 1, "pageSize is forwarded to every page");
      pages.push(page);
    }
    const ids: string[] = [];
    for await (const key of client.paginate(client.apiKeys.listApiKeys, { tenantId: "ten_demo", pageSize: 1 })) {
      assert.equal(key.tenantId, "ten_demo");
      ids.push(key.id);
    }
    assert.ok(ids.length >= 1);
    assert.ok(pages.length >= ids.length, "one key per page");
    assert.equal(new Set(ids).size, ids.length, "pages do not overlap");
    const whole = await client.apiKeys.listApiKeys({ tenantId: "ten_demo", pageSize: 1000 });
    assert.deepEqual([...ids].sort(), whole.apiKeys.map((k) => k.id).sort());
  });

  it("iterates the whole catalog through the pager", async () => {
    const names: string[] = [];
    let pages = 0;
    for await (const page of client.paginate(client.catalog.listCatalogModels, { pageSize: 5 }).pages()) {
      pages += 1;
      names.push(...page.models.map((m) => m.relayName));
    }
    const items: string[] = [];
    for await (const model of client.paginate(client.catalog.listCatalogModels, { pageSize: 5 })) {
      items.push(model.relayName);
    }
    assert.deepEqual(items, names);
    assert.ok(pages >= 2 && names.length > 5, `${names.length} models in ${pages} pages`);
    assert.ok(names.includes("gpt-4o-mini"));
    assert.equal(new Set(names).size, names.length, "pages do not overlap");
  });

  it("answers the same through client.chat and client.chatStream", async () => {
    const messages = [{ role: "user", content: "Say hello" }];
    const reply = await client.chat("gpt-4o-mini", messages, { max_completion_tokens: 64 });
    assert.equal(reply.object, "chat.completion");
    let text = "";
    let usage: relay.ChatCompletionChunk["usage"];
    for await (const chunk of client.chatStream("gpt-4o-mini", messages, { max_completion_tokens: 64, stream_options: { include_usage: true } })) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    assert.ok(text.length > 0);
    assert.equal(text, reply.choices[0]?.message?.content);
    assert.equal(usage?.totalTokens, reply.usage?.totalTokens);
  });

  it("embeds through client.embed", async () => {
    const list = await client.embed("text-embedding-3-small", ["a", "b"], { encoding_format: "float", dimensions: 4 });
    assert.equal(list.data.length, 2);
    const vector = fromValue(list.data[1]?.embedding);
    assert.ok(Array.isArray(vector) && vector.length === 4);
  });

  it("refuses the admin catalog to an API key", async () => {
    // The demo key is its tenant's management key: a credential, but not a platform operator's.
    const keyOnly = new RelayClient({ target: target ?? "", apiKey, maxRetries: 0 });
    try {
      await assert.rejects(keyOnly.catalog.listCatalogModels({}), PermissionDeniedError);
    } finally {
      keyOnly.close();
    }
  });
});
