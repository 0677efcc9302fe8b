import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  ModelNotFoundError,
  NoProviderAvailableError,
  NotFoundError,
  PaymentRequiredError,
  ProviderError,
  QuotaExceededError,
  RateLimitError,
  RelayError,
  RequestTimeoutError,
  RequestTooLargeError,
  ServiceUnavailableError,
  SpendCapExceededError,
  TenantProvisioningError,
  TenantSuspendedError,
  UnprocessableEntityError,
  parseRetryAfter,
  toRelayError,
} from "../src/errors.js";
import { relayShapedError } from "./support.js";

describe("toRelayError", () => {
  it("decodes ErrorInfo, the OpenAI body and the request id", () => {
    const err = toRelayError(relayShapedError({
      code: Code.FailedPrecondition, reason: "SPEND_CAP_EXCEEDED", httpStatus: "402", type: "insufficient_quota", requestId: "req_42",
    }));
    assert.ok(err instanceof SpendCapExceededError);
    assert.ok(err instanceof PaymentRequiredError);
    assert.equal(err.name, "SpendCapExceededError");
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal(err.reason, "spend_cap_exceeded");
    assert.equal(err.httpStatus, 402);
    assert.equal(err.type, "insufficient_quota");
    assert.equal(err.requestId, "req_42");
    assert.equal(err.body?.code, "spend_cap_exceeded");
    assert.equal(err.body?.message, "m");
    assert.equal(err.retryAfter, undefined);
    assert.equal(err.shouldRetry, undefined);
  });

  it("picks the subclass of each reason of the error table", () => {
    const cases = [
      ["TENANT_SUSPENDED", "402", TenantSuspendedError],
      ["QUOTA_EXCEEDED", "402", QuotaExceededError],
      ["MODEL_NOT_FOUND", "404", ModelNotFoundError],
      ["NOT_FOUND", "404", NotFoundError],
      ["REQUEST_TOO_LARGE", "413", RequestTooLargeError],
      ["PROVIDER_ERROR", "502", ProviderError],
      ["NO_PROVIDER_AVAILABLE", "503", NoProviderAvailableError],
      ["TENANT_PROVISIONING", "503", TenantProvisioningError],
      ["REQUEST_TIMEOUT", "504", RequestTimeoutError],
    ] as const;
    for (const [reason, httpStatus, expected] of cases) {
      const err = toRelayError(relayShapedError({ code: Code.Unavailable, reason, httpStatus }));
      assert.equal(err.constructor, expected, reason);
    }
  });

  it("classifies reasons outside the table by HTTP status, like the openai SDK", () => {
    // A provider's own 400 code passed through, and the 422 that shares INVALID_REQUEST with 400.
    const passthrough = toRelayError(relayShapedError({ code: Code.InvalidArgument, reason: "CONTEXT_LENGTH_EXCEEDED", httpStatus: "400" }));
    assert.ok(passthrough instanceof BadRequestError);
    assert.equal(passthrough.reason, "context_length_exceeded");
    const invalid = toRelayError(relayShapedError({ code: Code.InvalidArgument, reason: "INVALID_REQUEST", httpStatus: "422" }));
    assert.ok(invalid instanceof UnprocessableEntityError);
    const badRequest = toRelayError(relayShapedError({ code: Code.InvalidArgument, reason: "INVALID_REQUEST", httpStatus: "400" }));
    assert.equal(badRequest.constructor, BadRequestError);
  });

  it("reads retry-after and x-should-retry", () => {
    const err = toRelayError(relayShapedError({
      code: Code.ResourceExhausted, reason: "RATE_LIMIT_EXCEEDED", httpStatus: "429", headers: { "retry-after": "3", "x-should-retry": "false" },
    }));
    assert.ok(err instanceof RateLimitError);
    assert.equal(err.retryAfter, 3);
    assert.equal(err.shouldRetry, false);
  });

  it("falls back to the body's code, then the gRPC code, when no ErrorInfo came back", () => {
    const bodyOnly = new ConnectError("m", Code.FailedPrecondition, { "x-relay-error": JSON.stringify({ error: { code: "quota_exceeded" } }) });
    assert.ok(toRelayError(bodyOnly) instanceof QuotaExceededError);
    assert.ok(toRelayError(new ConnectError("refused", Code.Unavailable)) instanceof ServiceUnavailableError);
    assert.ok(toRelayError(new ConnectError("late", Code.DeadlineExceeded)) instanceof RequestTimeoutError);
    assert.ok(toRelayError(new ConnectError("who", Code.Unauthenticated)) instanceof AuthenticationError);
    assert.ok(toRelayError(new ConnectError("odd", Code.DataLoss)) instanceof InternalServerError);
    const canceled = toRelayError(new ConnectError("stop", Code.Canceled));
    assert.equal(canceled.constructor, RelayError);
    assert.equal(canceled.reason, undefined);
  });

  it("ignores ErrorInfo of another domain", () => {
    const err = toRelayError(relayShapedError({ code: Code.Unavailable, reason: "PROVIDER_ERROR", httpStatus: "402", domain: "other" }));
    // The body's code and x-relay-http-status still tell.
    assert.equal(err.reason, "provider_error");
    assert.equal(err.constructor, ProviderError);
  });

  it("survives malformed trailers", () => {
    const raw = new ConnectError("m", Code.ResourceExhausted, {
      "x-relay-error": "{not json", "retry-after": "soon", "x-relay-http-status": "abc",
    });
    const err = toRelayError(raw);
    assert.ok(err instanceof RateLimitError);
    assert.equal(err.body, undefined);
    assert.equal(err.retryAfter, undefined);
    assert.equal(err.httpStatus, undefined);
    for (const junk of ["[1]", "null", "\"text\"", "{\"error\": 3}"]) {
      assert.equal(toRelayError(new ConnectError("m", Code.Internal, { "x-relay-error": junk })).body, undefined, junk);
    }
  });

  it("wraps anything thrown and passes a RelayError through", () => {
    const err = toRelayError(new Error("boom"));
    assert.equal(err.code, Code.Unknown);
    assert.ok(err instanceof InternalServerError);
    assert.ok(err.cause instanceof Error);
    assert.equal(toRelayError(err), err);
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds, clamps negatives to 0 and rejects dates and junk", () => {
    assert.equal(parseRetryAfter("1"), 1);
    assert.equal(parseRetryAfter(" 2.5 "), 2.5);
    assert.equal(parseRetryAfter("-1"), 0);
    for (const bad of [null, "", "  ", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"]) {
      assert.equal(parseRetryAfter(bad), undefined, String(bad));
    }
  });
});
