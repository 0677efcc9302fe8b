/** RelayClient.chat / chatStream / embed: OpenAI-style JSON in, typed requests out (in-memory Relay). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { toJson } from "@bufbuild/protobuf";
import { createRouterTransport } from "@connectrpc/connect";

import { RelayClient } from "../src/client.js";
import { ChatCompletionRequestSchema, type ChatCompletionRequest } from "../src/gen/relay/v1/chat_pb.js";
import { EmbeddingRequestSchema, type EmbeddingRequest } from "../src/gen/relay/v1/embeddings_pb.js";
import { InferenceService } from "../src/gen/relay/v1/inference_service_pb.js";
import { chatRequest, embeddingRequest } from "../src/requests.js";
import { fromValue, toValue } from "../src/values.js";

function fakeRelay() {
  const chats: ChatCompletionRequest[] = [];
  const embeddings: EmbeddingRequest[] = [];
  const authorization: (string | null)[] = [];
  const transport = createRouterTransport(({ service }) => {
    service(InferenceService, {
      createChatCompletion(req, ctx) {
        chats.push(req);
        authorization.push(ctx.requestHeader.get("authorization"));
        return { id: "chatcmpl-1", object: "chat.completion", model: req.model, choices: [{ index: 0, message: { role: "assistant", content: "hi" } }] };
      },
      async *streamChatCompletion(req) {
        chats.push(req);
        yield { id: "c", choices: [{ index: 0, delta: { content: "h" } }] };
        yield { id: "c", choices: [{ index: 0, delta: { content: "i" } }] };
      },
      createEmbedding(req) {
        embeddings.push(req);
        return { object: "list", model: req.model, data: [{ index: 0, embedding: toValue([0.5, 0.25]) }] };
      },
    });
  });
  const client = new RelayClient({ target: "unused:1", apiKey: "rly_test_sk_k", transport, maxRetries: 0 });
  return { client, chats, embeddings, authorization };
}

const messages = [
  { role: "system", content: "Be brief." },
  { role: "user", content: [{ type: "text", text: "Hi" }] },
];

describe("RelayClient.chat", () => {
  it("sends OpenAI-style messages and parameters as the typed request", async () => {
    const { client, chats, authorization } = fakeRelay();
    const reply = await client.chat("gpt-4o-mini", messages, {
      temperature: 0.2, max_completion_tokens: 64, stream_options: { include_usage: true }, stop: ["\n"], seed: 7, tool_choice: "auto",
    });
    assert.equal(reply.choices[0]?.message?.content, "hi");
    assert.equal(chats.length, 1);
    const req = chats[0]!;
    assert.equal(req.model, "gpt-4o-mini");
    assert.deepEqual(req.messages.map((m) => [m.role, fromValue(m.content)]), [["system", "Be brief."], ["user", [{ type: "text", text: "Hi" }]]]);
    assert.equal(req.temperature, 0.2);
    assert.equal(req.maxCompletionTokens, 64);
    assert.equal(req.streamOptions?.includeUsage, true);
    assert.deepEqual(fromValue(req.stop), ["\n"]);
    assert.equal(req.seed, 7n);
    assert.deepEqual(fromValue(req.toolChoice), "auto");
    assert.equal(req.extraBody, undefined, "nothing unknown, no extra_body");
    assert.deepEqual(authorization, ["Bearer rly_test_sk_k"]);
  });

  it("sends unknown parameters in extraBody, merged with an explicit extra_body", async () => {
    const { client, chats } = fakeRelay();
    await client.chat("m", [{ role: "user", content: "x" }], { top_k: 40, extra_body: { top_k: 1, safe_mode: true }, maxTokens: 5 });
    const req = chats[0]!;
    assert.equal(req.maxTokens, 5, "camelCase names are known too");
    assert.deepEqual(req.extraBody, { top_k: 40, safe_mode: true }, "the explicit parameter wins");
  });

  it("streams chunks, and the model argument wins over params", async () => {
    const { client, chats } = fakeRelay();
    const text: string[] = [];
    for await (const chunk of client.chatStream("gpt-4o-mini", [{ role: "user", content: "x" }], { model: "other", user: undefined })) {
      text.push(chunk.choices[0]?.delta?.content ?? "");
    }
    assert.deepEqual(text, ["h", "i"]);
    assert.equal(chats[0]?.model, "gpt-4o-mini");
  });

  it("rejects messages the schema cannot hold, before calling Relay", async () => {
    const { client, chats } = fakeRelay();
    await assert.rejects(client.chat("m", [{ role: "user", content: "x", bogus_field: 1 }]), TypeError);
    await assert.rejects(client.chat("m", [{ role: 3 as unknown as string }]), /invalid ChatCompletionRequest/);
    await assert.rejects(client.chat("m", "hi" as unknown as []), /messages must be an array/);
    await assert.rejects(client.chat("m", [], { extra_body: [1] }), /extra_body must be a JSON object/);
    assert.throws(() => client.chatStream("m", [], { temperature: "hot" }), TypeError);
    assert.equal(chats.length, 0);
  });
});

describe("RelayClient.embed", () => {
  it("sends the input as a Value and OpenAI parameters typed", async () => {
    const { client, embeddings } = fakeRelay();
    const list = await client.embed("text-embedding-3-small", ["a", "b"], { encoding_format: "float", dimensions: 2, input_type: "query" });
    assert.deepEqual(fromValue(list.data[0]?.embedding), [0.5, 0.25]);
    const req = embeddings[0]!;
    assert.deepEqual(fromValue(req.input), ["a", "b"]);
    assert.equal(req.encodingFormat, "float");
    assert.equal(req.dimensions, 2);
    assert.deepEqual(req.extraBody, { input_type: "query" });
  });
});

describe("request builders", () => {
  it("build the same message the REST facade would parse from the JSON body", () => {
    const body = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], temperature: 0.5 };
    const req = chatRequest("gpt-4o-mini", body.messages, { temperature: 0.5 });
    assert.deepEqual(toJson(ChatCompletionRequestSchema, req, { useProtoFieldName: true }), body);
    const emb = embeddingRequest("e", "text", {});
    assert.deepEqual(toJson(EmbeddingRequestSchema, emb), { input: "text", model: "e" });
  });
});
