import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { RelayError, toRelayError } from "../src/errors.js";
import { ApiKeyService } from "../src/gen/relay/admin/v1/api_keys_pb.js";
import { ModelCatalogService } from "../src/gen/relay/admin/v1/catalog_pb.js";
import { TenantService } from "../src/gen/relay/admin/v1/tenants_pb.js";
import { UsageService } from "../src/gen/relay/admin/v1/usage_pb.js";
import { InferenceService } from "../src/gen/relay/v1/inference_service_pb.js";
import { OpenAIService } from "../src/gen/relay/v1/openai_service_pb.js";
import { DEFAULT_RETRY_POLICY, Deadline, isIdempotent, isRetryable, retryDelayMs, sleep } from "../src/retry.js";
import { relayShapedError } from "./support.js";

function rateLimited(headers: Record<string, string> = {}): RelayError {
  return toRelayError(relayShapedError({ code: Code.ResourceExhausted, reason: "RATE_LIMIT_EXCEEDED", httpStatus: "429", headers }));
}

const retryable = { idempotent: true, remainingMs: undefined };

function provisioning(): RelayError {
  return toRelayError(relayShapedError({
    code: Code.Unavailable, reason: "TENANT_PROVISIONING", httpStatus: "503", headers: { "retry-after": "1" },
  }));
}

describe("retryDelayMs", () => {
  const policy = DEFAULT_RETRY_POLICY;

  it("lets an admin call wait out a provisioning tenant, even without request_id, bounded", () => {
    const admin = { idempotent: false, admin: true, remainingMs: undefined };
    assert.equal(retryDelayMs(provisioning(), 5, policy, admin), 1000); // past maxRetries: provisioning has its own bound
    assert.equal(retryDelayMs(provisioning(), 30, policy, admin), undefined);
    assert.equal(retryDelayMs(provisioning(), 0, policy, { ...admin, remainingMs: 500 }), undefined);
    assert.equal(retryDelayMs(provisioning(), 0, policy, { idempotent: false, remainingMs: undefined }), undefined); // inference
    assert.equal(retryDelayMs(provisioning(), 0, { ...policy, maxRetries: 0 }, admin), undefined);
  });

  it("waits the server's retry-after, zero included", () => {
    assert.equal(retryDelayMs(rateLimited({ "retry-after": "1" }), 0, policy, retryable, () => 0), 1000);
    assert.equal(retryDelayMs(rateLimited({ "retry-after": "0" }), 1, policy, retryable, () => 0), 0);
  });

  it("gives up on a retry-after over a minute", () => {
    assert.equal(retryDelayMs(rateLimited({ "retry-after": "3600" }), 0, policy, retryable), undefined);
  });

  it("backs off exponentially, capped, jittered down by at most a quarter", () => {
    const policy8 = { ...policy, maxRetries: 10 };
    assert.deepEqual([0, 1, 2, 9].map((n) => retryDelayMs(rateLimited(), n, policy8, retryable, () => 0)), [500, 1000, 2000, 8000]);
    assert.equal(retryDelayMs(rateLimited(), 1, policy8, retryable, () => 1), 750);
  });

  it("gives up after maxRetries, on non-idempotent calls and when the deadline would pass", () => {
    assert.equal(retryDelayMs(rateLimited(), 2, policy, retryable), undefined);
    assert.equal(retryDelayMs(rateLimited(), 0, policy, { idempotent: false, remainingMs: undefined }), undefined);
    assert.equal(retryDelayMs(rateLimited({ "retry-after": "1" }), 0, policy, { idempotent: true, remainingMs: 999 }), undefined);
    assert.equal(retryDelayMs(rateLimited({ "retry-after": "1" }), 0, policy, { idempotent: true, remainingMs: 1001 }), 1000);
  });
});

describe("isRetryable", () => {
  it("retries only come-back-later failures", () => {
    assert.equal(isRetryable(rateLimited()), true);
    assert.equal(isRetryable(toRelayError(new ConnectError("refused", Code.Unavailable))), true);
    assert.equal(isRetryable(toRelayError(new ConnectError("bad", Code.InvalidArgument))), false);
    assert.equal(isRetryable(toRelayError(new ConnectError("late", Code.DeadlineExceeded))), false);
  });

  it("never retries what the server marked terminal, a 402, or an oversized message", () => {
    assert.equal(isRetryable(rateLimited({ "x-should-retry": "false" })), false);
    const capped = toRelayError(relayShapedError({ code: Code.Unavailable, reason: "SPEND_CAP_EXCEEDED", httpStatus: "402" }));
    assert.equal(isRetryable(capped), false);
    const huge = toRelayError(new ConnectError("Received message larger than max (9 vs. 4)", Code.ResourceExhausted));
    assert.equal(isRetryable(huge), false);
  });
});

describe("isIdempotent", () => {
  it("treats reads as safe to repeat", () => {
    assert.equal(isIdempotent(ApiKeyService.method.listApiKeys, {}), true);
    assert.equal(isIdempotent(ApiKeyService.method.getApiKey, {}), true);
    assert.equal(isIdempotent(UsageService.method.queryUsage, {}), true);
    assert.equal(isIdempotent(OpenAIService.method.listModels, {}), true);
  });

  it("never repeats inference: it spends money and has no idempotency key", () => {
    assert.equal(isIdempotent(InferenceService.method.createChatCompletion, {}), false);
    assert.equal(isIdempotent(InferenceService.method.streamChatCompletion, {}), false);
    assert.equal(isIdempotent(InferenceService.method.createEmbedding, {}), false);
  });

  it("repeats a mutation only when it carries a request_id", () => {
    assert.equal(isIdempotent(ApiKeyService.method.createApiKey, {}), false);
    assert.equal(isIdempotent(ApiKeyService.method.createApiKey, { requestId: "" }), false);
    assert.equal(isIdempotent(ApiKeyService.method.createApiKey, { requestId: "r-1" }), true);
    assert.equal(isIdempotent(ModelCatalogService.method.upsertCatalogModel, { requestId: "r-1" }), true);
    assert.equal(isIdempotent(TenantService.method.createTenant, null), false);
  });
});

describe("Deadline", () => {
  it("counts down from the timeout and never below zero", () => {
    let now = 1_000;
    const deadline = new Deadline(500, () => now);
    assert.equal(deadline.remainingMs(), 500);
    now = 1_200;
    assert.equal(deadline.remainingMs(), 300);
    now = 9_000;
    assert.equal(deadline.remainingMs(), 0);
    assert.equal(new Deadline(undefined).remainingMs(), undefined);
  });
});

describe("sleep", () => {
  it("rejects with the abort reason when the call is aborted", async () => {
    const controller = new AbortController();
    const pending = sleep(60_000, controller.signal);
    controller.abort(new Error("stop"));
    await assert.rejects(pending, /stop/);
    await assert.rejects(sleep(1, AbortSignal.abort(new Error("already"))), /already/);
  });
});
