/** RelayClient's call conventions, against an in-memory Relay (connect's router transport). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create, createFileRegistry } from "@bufbuild/protobuf";
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import { EmptySchema, FileDescriptorProtoSchema, file_google_protobuf_empty } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport, type HandlerContext, type Transport } from "@connectrpc/connect";

import { RelayClient, type RelayClientOptions } from "../src/client.js";
import { ProviderError, RateLimitError, RelayError, ServiceUnavailableError, SpendCapExceededError } from "../src/errors.js";
import { ApiKeyService } from "../src/gen/relay/admin/v1/api_keys_pb.js";
import { InferenceService } from "../src/gen/relay/v1/inference_service_pb.js";
import { OpenAIService } from "../src/gen/relay/v1/openai_service_pb.js";
import { sleep } from "../src/retry.js";
import { bindService, type CallPolicy } from "../src/services.js";
import { toValue } from "../src/values.js";
import { relayShapedError } from "./support.js";

const unavailable = (): ConnectError =>
  relayShapedError({ code: Code.Unavailable, reason: "NO_PROVIDER_AVAILABLE", httpStatus: "503", type: "api_error" });

/**
 * A server-streaming read, which Relay's protos do not have (yet): it proves the
 * stream retry rules without waiting for one.
 */
type ProbeShape = { listThings: { methodKind: "server_streaming"; input: typeof EmptySchema; output: typeof EmptySchema } };
const ProbeService = ((): GenService<ProbeShape> => {
  const file = create(FileDescriptorProtoSchema, {
    name: "probe.proto",
    package: "probe.v1",
    syntax: "proto3",
    dependency: ["google/protobuf/empty.proto"],
    service: [{
      name: "ProbeService",
      method: [{ name: "ListThings", inputType: ".google.protobuf.Empty", outputType: ".google.protobuf.Empty", serverStreaming: true }],
    }],
  });
  const registry = createFileRegistry(file, (name) => (name === "google/protobuf/empty.proto" ? file_google_protobuf_empty : undefined));
  const service = registry.getService("probe.v1.ProbeService");
  assert.ok(service);
  return service as GenService<ProbeShape>; // the shape is the descriptor built just above
})();

interface Seen {
  calls: number;
  authorization: (string | null)[];
  timeouts: (number | undefined)[];
}

/** A fake Relay whose handlers fail `failures` times before answering, recording what they saw. */
function fakeRelay(failures: number, failure: () => ConnectError = unavailable, failAfterFirstMessage = false) {
  const seen: Seen = { calls: 0, authorization: [], timeouts: [] };
  const observe = (ctx: HandlerContext): void => {
    seen.calls += 1;
    seen.authorization.push(ctx.requestHeader.get("authorization"));
    seen.timeouts.push(ctx.timeoutMs());
    if (seen.calls <= failures && !failAfterFirstMessage) {
      throw failure();
    }
  };
  const transport = createRouterTransport(({ service }) => {
    service(InferenceService, {
      createChatCompletion(_req, ctx) {
        observe(ctx);
        return { id: "chatcmpl-1", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "hi" } }] };
      },
      async *streamChatCompletion(_req, ctx) {
        observe(ctx);
        yield { id: "c", choices: [{ index: 0, delta: { content: "a" } }] };
        if (failAfterFirstMessage) {
          throw failure();
        }
        yield { id: "c", choices: [{ index: 0, delta: { content: "b" } }] };
      },
    });
    service(OpenAIService, {
      listModels(_req, ctx) {
        observe(ctx);
        return { object: "list", data: [{ id: "gpt-4o-mini", object: "model" }] };
      },
    });
    service(ApiKeyService, {
      createApiKey(_req, ctx) {
        observe(ctx);
        return { apiKey: { id: "key_1" }, secret: "rly_test_sk_x" };
      },
      listApiKeys(_req, ctx) {
        observe(ctx);
        return { apiKeys: [] };
      },
    });
    service(ProbeService, {
      async *listThings(_req, ctx) {
        observe(ctx);
        yield {};
        if (failAfterFirstMessage && seen.calls <= failures) {
          throw failure();
        }
        yield {};
      },
    });
  });
  return { seen, transport };
}

const chat = { model: "gpt-4o-mini", messages: [{ role: "user", content: toValue("hi") }] };

function client(transport: Transport, extra: Partial<RelayClientOptions> = {}): RelayClient {
  return new RelayClient({ target: "unused:1", apiKey: "rly_test_sk_k", transport, initialBackoffMs: 1, maxBackoffMs: 2, ...extra });
}

async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) {
    out.push(item);
  }
  return out;
}

describe("RelayClient retries", () => {
  it("retries a read that met UNAVAILABLE until it succeeds", async () => {
    const { seen, transport } = fakeRelay(2);
    const models = await client(transport).models.listModels({});
    assert.deepEqual(models.data.map((m) => m.id), ["gpt-4o-mini"]);
    assert.equal(seen.calls, 3);
  });

  it("gives up after maxRetries with the last error, typed", async () => {
    const { seen, transport } = fakeRelay(10);
    await assert.rejects(client(transport, { maxRetries: 1 }).models.listModels({}), ServiceUnavailableError);
    assert.equal(seen.calls, 2);
  });

  it("does not retry when maxRetries is 0", async () => {
    const rateLimited = () => relayShapedError({ code: Code.ResourceExhausted, reason: "RATE_LIMIT_EXCEEDED", httpStatus: "429", headers: { "retry-after": "1" } });
    const { seen, transport } = fakeRelay(10, rateLimited);
    const err = await client(transport, { maxRetries: 0 }).models.listModels({}).catch((e: unknown) => e);
    assert.ok(err instanceof RateLimitError);
    assert.equal(err.retryAfter, 1);
    assert.equal(seen.calls, 1);
  });

  it("never retries a failure that would fail again", async () => {
    const capped = () => relayShapedError({ code: Code.FailedPrecondition, reason: "SPEND_CAP_EXCEEDED", httpStatus: "402" });
    const { seen, transport } = fakeRelay(10, capped);
    await assert.rejects(client(transport).models.listModels({}), SpendCapExceededError);
    assert.equal(seen.calls, 1);
  });

  it("never retries inference, unary or streamed", async () => {
    const unary = fakeRelay(1);
    await assert.rejects(client(unary.transport).inference.createChatCompletion(chat), ServiceUnavailableError);
    assert.equal(unary.seen.calls, 1);
    const stream = fakeRelay(1);
    await assert.rejects(drain(client(stream.transport).inference.streamChatCompletion(chat)), ServiceUnavailableError);
    assert.equal(stream.seen.calls, 1);
  });

  it("retries a mutation only with a request_id", async () => {
    const without = fakeRelay(1);
    await assert.rejects(client(without.transport).apiKeys.createApiKey({ apiKey: { name: "k" } }), ServiceUnavailableError);
    assert.equal(without.seen.calls, 1);
    const withId = fakeRelay(1);
    const created = await client(withId.transport).apiKeys.createApiKey({ apiKey: { name: "k" }, requestId: "req-1" });
    assert.equal(created.apiKey?.id, "key_1");
    assert.equal(withId.seen.calls, 2);
  });

  it("retries a streamed read that failed before its first message", async () => {
    const { seen, transport } = fakeRelay(1);
    const things = await drain(client(transport).service(ProbeService).listThings({}));
    assert.equal(things.length, 2);
    assert.equal(seen.calls, 2);
  });

  it("does not retry a stream that already delivered a message", async () => {
    const { seen, transport } = fakeRelay(1, unavailable, true);
    const delivered: unknown[] = [];
    const consume = async (): Promise<void> => {
      for await (const thing of client(transport).service(ProbeService).listThings({})) {
        delivered.push(thing);
      }
    };
    await assert.rejects(consume(), ServiceUnavailableError);
    assert.equal(delivered.length, 1);
    assert.equal(seen.calls, 1);
  });

  it("raises a mid-stream failure of a completion as a RelayError after the delivered chunks", async () => {
    const { transport } = fakeRelay(1, () => relayShapedError({ code: Code.Unavailable, reason: "PROVIDER_ERROR", httpStatus: "502" }), true);
    const text: string[] = [];
    const consume = async (): Promise<void> => {
      for await (const chunk of client(transport).inference.streamChatCompletion(chat)) {
        text.push(chunk.choices[0]?.delta?.content ?? "");
      }
    };
    await assert.rejects(consume(), ProviderError);
    assert.deepEqual(text, ["a"]);
  });
});

describe("bindService backoff", () => {
  // bindService with a recording sleep: what RelayClient waits, without waiting.
  function policy(sleepImpl: CallPolicy["sleep"], timeoutMs?: number): CallPolicy {
    return { retry: { maxRetries: 1, initialBackoffMs: 60_000, maxBackoffMs: 60_000 }, timeoutMs, credential: () => "k", sleep: sleepImpl };
  }
  const rateLimited = () => relayShapedError({ code: Code.ResourceExhausted, reason: "RATE_LIMIT_EXCEEDED", httpStatus: "429", headers: { "retry-after": "1" } });

  it("waits the server's retry-after before retrying", async () => {
    const { seen, transport } = fakeRelay(1, rateLimited);
    const waits: number[] = [];
    const openai = bindService(OpenAIService, transport, policy(async (ms) => { waits.push(ms); }));
    await openai.listModels({});
    assert.deepEqual(waits, [1000]);
    assert.equal(seen.calls, 2);
  });

  it("does not wait past the call's deadline", async () => {
    const { seen, transport } = fakeRelay(1, rateLimited);
    const waits: number[] = [];
    const openai = bindService(OpenAIService, transport, policy(async (ms) => { waits.push(ms); }, 500));
    await assert.rejects(openai.listModels({}), RateLimitError);
    assert.deepEqual(waits, []);
    assert.equal(seen.calls, 1);
  });

  it("stops waiting when the call is aborted, with a Canceled RelayError", async () => {
    const controller = new AbortController();
    const { seen, transport } = fakeRelay(10);
    const waits: number[] = [];
    const openai = bindService(OpenAIService, transport, policy((ms, signal) => {
      waits.push(ms);
      controller.abort();
      return sleep(ms, signal); // a minute: only the abort can end it in time
    }));
    const err = await openai.listModels({}, { signal: controller.signal }).catch((e: unknown) => e);
    assert.ok(err instanceof RelayError, String(err));
    assert.equal(err.code, Code.Canceled);
    assert.equal(waits.length, 1);
    assert.ok(waits[0]! >= 45_000, "the exponential backoff, jittered down by at most a quarter");
    assert.equal(seen.calls, 1);
  });
});

describe("RelayClient credentials and deadlines", () => {
  it("sends the API key to the data plane and the admin token to admin services", async () => {
    const { seen, transport } = fakeRelay(0);
    const relay = client(transport, { adminToken: "admin-secret" });
    await relay.inference.createChatCompletion(chat);
    await relay.apiKeys.listApiKeys({});
    await relay.apiKeys.listApiKeys({}, { headers: { authorization: "Bearer other" } });
    assert.deepEqual(seen.authorization, ["Bearer rly_test_sk_k", "Bearer admin-secret", "Bearer other"]);
  });

  it("uses the API key for admin services when there is no admin token, and nothing when there is neither", async () => {
    const { seen, transport } = fakeRelay(0);
    await client(transport).apiKeys.listApiKeys({});
    await new RelayClient({ target: "unused:1", transport }).apiKeys.listApiKeys({});
    assert.deepEqual(seen.authorization, ["Bearer rly_test_sk_k", null]);
  });

  it("sets a deadline on every call, overridable per call and disabled by 0", async () => {
    const { seen, transport } = fakeRelay(0);
    await client(transport, { timeoutMs: 30_000 }).inference.createChatCompletion(chat);
    await client(transport, { timeoutMs: 30_000 }).inference.createChatCompletion(chat, { timeoutMs: 5_000 });
    await client(transport, { timeoutMs: 0 }).inference.createChatCompletion(chat);
    await client(transport, { timeoutMs: 30_000 }).inference.createChatCompletion(chat, { timeoutMs: 0 });
    const [first, second, third, fourth] = seen.timeouts;
    assert.ok(first !== undefined && first > 5_000 && first <= 30_000, String(first));
    assert.ok(second !== undefined && second <= 5_000, String(second));
    assert.equal(third, undefined);
    assert.equal(fourth, undefined);
  });
});

describe("RelayClient options", () => {
  it("rejects bad options at construction", () => {
    assert.throws(() => new RelayClient({ target: "127.0.0.1:1", maxRetries: -1 }), RangeError);
    assert.throws(() => new RelayClient({ target: "127.0.0.1:1", timeoutMs: Number.NaN }), RangeError);
    assert.throws(() => new RelayClient({ target: "" }), TypeError);
    assert.throws(() => new RelayClient({ target: "host:1/path" }), TypeError);
  });

  it("maps a refused connection to ServiceUnavailableError", async () => {
    // Port 1 on loopback: nothing listens there.
    const relay = new RelayClient({ target: "127.0.0.1:1", apiKey: "k", maxRetries: 1, initialBackoffMs: 1 });
    try {
      const err = await relay.models.listModels({}).catch((e: unknown) => e);
      assert.ok(err instanceof ServiceUnavailableError, String(err));
      assert.equal(err.code, Code.Unavailable);
      assert.equal(err.reason, undefined);
    } finally {
      relay.close();
    }
  });
});
