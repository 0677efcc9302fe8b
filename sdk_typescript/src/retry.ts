/**
 * When and how long to wait before trying a failed call again (the Python SDK's rules).
 *
 * Retries are safe only when repeating the call cannot do a thing twice: reads
 * (`Get*`/`List*`/`Query*`…), RPCs whose proto declares an idempotency level,
 * or mutations that carry a non-empty `request_id` (the server de-duplicates on
 * it).  Inference calls spend money and have no idempotency key, so they are
 * never repeated; a stream is never repeated once a message has arrived.  Only
 * "come back later" failures are retried: UNAVAILABLE and RESOURCE_EXHAUSTED,
 * never a 402, nor anything the server marked `x-should-retry: false`.
 *
 * One exception: a `TenantProvisioningError` from an admin call.  The server
 * refuses it before doing anything (the tenant is still being set up, a matter
 * of seconds), so a key created right after its tenant is repeated at the
 * server's `retry-after` until provisioning ends — at most
 * `PROVISIONING_RETRIES` times, never past the call's deadline.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";

import { Code, PaymentRequiredError, TenantProvisioningError, type RelayError } from "./errors.js";

export interface RetryPolicy {
  /** Retries after the first attempt; 0 disables retrying. */
  maxRetries: number;
  /** The first backoff; doubled per retry. */
  initialBackoffMs: number;
  /** The ceiling of the exponential backoff. */
  maxBackoffMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = { maxRetries: 2, initialBackoffMs: 500, maxBackoffMs: 8_000 };

/** A `retry-after` longer than this is not waited for: the error is raised. */
export const MAX_RETRY_AFTER_MS = 60_000;

/** How many times an admin call waits out a provisioning tenant. */
export const PROVISIONING_RETRIES = 30;

/** Backoff is shortened by up to this fraction at random, so rejected clients spread out. */
const JITTER = 0.25;

const RETRYABLE_CODES: ReadonlySet<Code> = new Set([Code.Unavailable, Code.ResourceExhausted]);

// Verbs that only read. Anything else (Create, Update, Revoke, Rotate, Transition,
// Disable, Upsert, Add, Remove, Set, Delete, Stream, …) may change state or cost money.
const READ_ONLY_PREFIXES = ["Get", "List", "Query", "Search", "Count", "Check"];

/** True when repeating `method(request)` cannot have an effect twice. */
export function isIdempotent(method: DescMethod, request: unknown): boolean {
  if (method.idempotency !== MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN) {
    return true;
  }
  if (READ_ONLY_PREFIXES.some((prefix) => method.name.startsWith(prefix))) {
    return true;
  }
  const field = method.input.fields.find((f) => f.name === "request_id");
  if (field === undefined || typeof request !== "object" || request === null) {
    return false;
  }
  const value: unknown = (request as Record<string, unknown>)[field.localName];
  return typeof value === "string" && value !== "";
}

/** True for transient failures the server wants the client to retry. */
export function isRetryable(err: RelayError): boolean {
  if (!RETRYABLE_CODES.has(err.code) || err instanceof PaymentRequiredError || err.shouldRetry === false) {
    return false;
  }
  // gRPC's own RESOURCE_EXHAUSTED for an oversized message never gets better.
  return !(err.reason === undefined && /larger than/i.test(err.message));
}

/** Retry number `retry` (0-based) of the exponential backoff, jittered down. */
export function backoffMs(retry: number, policy: RetryPolicy, random: () => number = Math.random): number {
  return Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** retry) * (1 - JITTER * random());
}

export interface RetryContext {
  idempotent: boolean;
  /** A control-plane call (relay.admin.v1): it waits out a tenant's provisioning. */
  admin?: boolean;
  /** What is left of the call's deadline; undefined = no deadline. */
  remainingMs: number | undefined;
}

/**
 * Milliseconds to wait before retry number `retry` (0-based), or undefined to
 * give up and raise `err`: the server's `retry-after` when it sent one, else
 * the backoff; never past the call's deadline.
 */
export function retryDelayMs(
  err: RelayError,
  retry: number,
  policy: RetryPolicy,
  context: RetryContext,
  random: () => number = Math.random,
): number | undefined {
  if (context.admin === true && err instanceof TenantProvisioningError && err.shouldRetry !== false) {
    if (retry >= PROVISIONING_RETRIES || policy.maxRetries === 0) {
      return undefined;
    }
    const wait = Math.min(err.retryAfter ?? 1, 5) * 1000;
    return context.remainingMs !== undefined && wait >= context.remainingMs ? undefined : wait;
  }
  if (retry >= policy.maxRetries || !context.idempotent || !isRetryable(err)) {
    return undefined;
  }
  let wait: number;
  if (err.retryAfter !== undefined) {
    wait = err.retryAfter * 1000;
    if (wait > MAX_RETRY_AFTER_MS) {
      return undefined;
    }
  } else {
    wait = backoffMs(retry, policy, random);
  }
  if (context.remainingMs !== undefined && wait >= context.remainingMs) {
    return undefined; // the deadline would pass while waiting
  }
  return wait;
}

/** One deadline shared by every attempt of a call (and its waits). */
export class Deadline {
  private readonly end: number | undefined;

  constructor(
    timeoutMs: number | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.end = timeoutMs === undefined ? undefined : now() + timeoutMs;
  }

  /** Milliseconds left (never negative), or undefined without a deadline. */
  remainingMs(): number | undefined {
    return this.end === undefined ? undefined : Math.max(0, this.end - this.now());
  }
}

export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/** A sleep that ends early, rejecting, when the caller aborts the call. */
export const sleep: Sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
