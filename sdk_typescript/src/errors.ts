/**
 * Relay's error contract, decoded.
 *
 * Every failed call carries a gRPC status plus, in its trailers,
 * `grpc-status-details-bin` (a google.rpc.Status holding one ErrorInfo whose
 * reason is the error code upper-cased, domain "relay.gateway", metadata
 * {http_status, type, request_id}), `x-relay-error` (the OpenAI JSON body) and,
 * for rate limits, `retry-after`.  `toRelayError` turns any thrown value into
 * the most specific `RelayError` subclass (the same classes and fields as the
 * Python SDK's), so callers can branch with `instanceof` the way they would
 * with the openai SDK's error classes.
 */
import { Code, ConnectError } from "@connectrpc/connect";

import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code };

export const ERROR_DOMAIN = "relay.gateway";

/** The OpenAI error object Relay sends in `x-relay-error` (the value of its `error` key). */
export interface OpenAIErrorObject {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
  details?: Record<string, unknown>;
  [key: string]: unknown;
}

/** What a RelayError is built from; subclasses share the constructor. */
export interface RelayErrorInit {
  message: string;
  code: Code;
  reason?: string;
  httpStatus?: number;
  type?: string;
  requestId?: string;
  retryAfter?: number;
  body?: OpenAIErrorObject;
  metadata: Headers;
  cause?: unknown;
}

/** Any failure of a Relay call. `code` is the gRPC status; `reason` Relay's error code. */
export class RelayError extends Error {
  override name = "RelayError";
  /** The gRPC status code (connect's `Code` enum: `Code.Unauthenticated`, …). */
  readonly code: Code;
  /** Relay's error code, lower-case ("spend_cap_exceeded"); undefined when the failure did not come from Relay. */
  readonly reason: string | undefined;
  /** The HTTP status a REST client would have seen, e.g. 402. */
  readonly httpStatus: number | undefined;
  /** The OpenAI `error.type`, e.g. "insufficient_quota". */
  readonly type: string | undefined;
  /** Relay's request id: quote it in support requests. */
  readonly requestId: string | undefined;
  /** Seconds the server asked the client to wait, from `retry-after`. */
  readonly retryAfter: number | undefined;
  /** The OpenAI error object (`{message, type, param, code, …}`) from `x-relay-error`. */
  readonly body: OpenAIErrorObject | undefined;
  /** Response headers and trailers of the failed call. */
  readonly metadata: Headers;

  constructor(init: RelayErrorInit) {
    super(init.message, { cause: init.cause });
    this.code = init.code;
    this.reason = init.reason;
    this.httpStatus = init.httpStatus;
    this.type = init.type;
    this.requestId = init.requestId;
    this.retryAfter = init.retryAfter;
    this.body = init.body;
    this.metadata = init.metadata;
  }

  /** The server's `x-should-retry` hint (false on terminal errors such as 402), if it sent one. */
  get shouldRetry(): boolean | undefined {
    const value = this.metadata.get("x-should-retry");
    return value === null ? undefined : value.toLowerCase() === "true";
  }
}

// Names are assigned explicitly: minifiers and `instanceof`-less logging rely on them.
/** 400: the request is malformed or invalid. */
export class BadRequestError extends RelayError { override name = "BadRequestError"; }
/** 401: the API key or admin token is missing, unknown or revoked. */
export class AuthenticationError extends RelayError { override name = "AuthenticationError"; }
/** 402: the tenant may not spend (suspended, quota or spend cap). Never retried. */
export class PaymentRequiredError extends RelayError { override name = "PaymentRequiredError"; }
export class TenantSuspendedError extends PaymentRequiredError { override name = "TenantSuspendedError"; }
export class QuotaExceededError extends PaymentRequiredError { override name = "QuotaExceededError"; }
export class SpendCapExceededError extends PaymentRequiredError { override name = "SpendCapExceededError"; }
/** 403: the credential is valid but may not do this. */
export class PermissionDeniedError extends RelayError { override name = "PermissionDeniedError"; }
/** 404: the resource does not exist (or is not visible to the caller). */
export class NotFoundError extends RelayError { override name = "NotFoundError"; }
export class ModelNotFoundError extends NotFoundError { override name = "ModelNotFoundError"; }
/** 409: the resource already exists or changed meanwhile. */
export class ConflictError extends RelayError { override name = "ConflictError"; }
/** 413: the request is over the server's size limit. */
export class RequestTooLargeError extends RelayError { override name = "RequestTooLargeError"; }
/** 422: well-formed but semantically invalid. */
export class UnprocessableEntityError extends RelayError { override name = "UnprocessableEntityError"; }
/** 429: a rate limit was hit; `retryAfter` says when to come back. */
export class RateLimitError extends RelayError { override name = "RateLimitError"; }
/** 500: Relay failed unexpectedly. */
export class InternalServerError extends RelayError { override name = "InternalServerError"; }
/** 501: the server does not implement this RPC (yet). */
export class UnimplementedError extends RelayError { override name = "UnimplementedError"; }
/** 502: the upstream model provider failed. */
export class ProviderError extends RelayError { override name = "ProviderError"; }
/** 503: Relay cannot serve the call now; also when Relay could not be reached at all. */
export class ServiceUnavailableError extends RelayError { override name = "ServiceUnavailableError"; }
export class NoProviderAvailableError extends ServiceUnavailableError { override name = "NoProviderAvailableError"; }
export class TenantProvisioningError extends ServiceUnavailableError { override name = "TenantProvisioningError"; }
/** 504, or the call's own deadline passed. */
export class RequestTimeoutError extends RelayError { override name = "RequestTimeoutError"; }

type ErrorClass = new (init: RelayErrorInit) => RelayError;

// The error table's codes (the same table as the Python SDK's).  Checked first:
// a reason is more precise than the HTTP status it shares with others (402).
// "invalid_request" is both 400 and 422, so the HTTP status decides it.
const BY_REASON: Readonly<Record<string, ErrorClass>> = {
  invalid_json: BadRequestError,
  invalid_api_key: AuthenticationError,
  tenant_suspended: TenantSuspendedError,
  quota_exceeded: QuotaExceededError,
  spend_cap_exceeded: SpendCapExceededError,
  permission_denied: PermissionDeniedError,
  model_not_found: ModelNotFoundError,
  not_found: NotFoundError,
  conflict: ConflictError,
  failed_precondition: ConflictError,
  request_too_large: RequestTooLargeError,
  rate_limit_exceeded: RateLimitError,
  internal_error: InternalServerError,
  not_implemented: UnimplementedError,
  provider_error: ProviderError,
  no_provider_available: NoProviderAvailableError,
  tenant_provisioning: TenantProvisioningError,
  request_timeout: RequestTimeoutError,
};

// Reasons outside the table (a provider's own code passed through, "invalid_header",
// codes added later) are classified by the HTTP status, as the openai SDK does.
const BY_HTTP_STATUS: Readonly<Record<number, ErrorClass>> = {
  400: BadRequestError,
  401: AuthenticationError,
  402: PaymentRequiredError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: RequestTooLargeError,
  422: UnprocessableEntityError,
  429: RateLimitError,
  500: InternalServerError,
  501: UnimplementedError,
  502: ProviderError,
  503: ServiceUnavailableError,
  504: RequestTimeoutError,
};

// Last resort, for failures that never reached Relay (a refused connection, the call's own deadline).
const BY_GRPC_CODE: Partial<Readonly<Record<Code, ErrorClass>>> = {
  [Code.InvalidArgument]: BadRequestError,
  [Code.OutOfRange]: BadRequestError,
  [Code.Unauthenticated]: AuthenticationError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.NotFound]: NotFoundError,
  [Code.AlreadyExists]: ConflictError,
  [Code.ResourceExhausted]: RateLimitError,
  [Code.Internal]: InternalServerError,
  [Code.Unknown]: InternalServerError,
  [Code.DataLoss]: InternalServerError,
  [Code.Unimplemented]: UnimplementedError,
  [Code.Unavailable]: ServiceUnavailableError,
  [Code.DeadlineExceeded]: RequestTimeoutError,
};

/** The most specific class: by reason, then HTTP status, then gRPC code. */
export function errorClass(reason: string | undefined, httpStatus: number | undefined, code: Code): ErrorClass {
  return (reason !== undefined ? BY_REASON[reason] : undefined)
    ?? (httpStatus !== undefined ? BY_HTTP_STATUS[httpStatus] : undefined)
    ?? BY_GRPC_CODE[code]
    ?? RelayError;
}

/** `retry-after` as seconds (negative → 0); absent or malformed → undefined (never NaN). */
export function parseRetryAfter(value: string | null): number | undefined {
  const seconds = value === null || value.trim() === "" ? NaN : Number(value);
  return Number.isFinite(seconds) ? Math.max(0, seconds) : undefined;
}

function parseBody(value: string | null): OpenAIErrorObject | undefined {
  if (value === null) {
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined; // a malformed body must not hide the status behind a SyntaxError
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return undefined;
  }
  const inner: unknown = "error" in parsed ? parsed.error : parsed;
  return typeof inner === "object" && inner !== null && !Array.isArray(inner) ? (inner as OpenAIErrorObject) : undefined;
}

function parseHttpStatus(value: string | null | undefined): number | undefined {
  const status = value === null || value === undefined ? NaN : Number(value);
  return Number.isInteger(status) && status >= 100 && status <= 599 ? status : undefined;
}

/** Decode a failed call into the most specific RelayError; a RelayError passes through unchanged. */
export function toRelayError(thrown: unknown): RelayError {
  if (thrown instanceof RelayError) {
    return thrown;
  }
  const err = ConnectError.from(thrown);
  const metadata = err.metadata;
  const info = err.findDetails(ErrorInfoSchema).find((d) => d.domain === ERROR_DOMAIN);
  const body = parseBody(metadata.get("x-relay-error"));
  const reason = info?.reason.toLowerCase() ?? (typeof body?.code === "string" ? body.code : undefined);
  const httpStatus = parseHttpStatus(info?.metadata["http_status"]) ?? parseHttpStatus(metadata.get("x-relay-http-status"));
  const ErrorType = errorClass(reason, httpStatus, err.code);
  return new ErrorType({
    message: err.rawMessage,
    code: err.code,
    reason,
    httpStatus,
    type: info?.metadata["type"] || (typeof body?.type === "string" ? body.type : undefined),
    requestId: info?.metadata["request_id"] || metadata.get("x-request-id") || undefined,
    retryAfter: parseRetryAfter(metadata.get("retry-after")),
    body,
    metadata,
    cause: thrown,
  });
}
