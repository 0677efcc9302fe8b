/**
 * Bind a generated service descriptor to a transport with Relay's call conventions.
 *
 * The result has exactly the type connect's `createClient` gives (one typed
 * method per RPC, straight from the descriptor), and every method adds, per
 * call: the `authorization: Bearer …` header, one deadline shared by all
 * attempts, retries (see retry.ts) and the mapping of failures to `RelayError`
 * subclasses.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client, type Transport } from "@connectrpc/connect";

import { toRelayError, type RelayError } from "./errors.js";
import { Deadline, isIdempotent, retryDelayMs, type RetryPolicy, type Sleep } from "./retry.js";

export interface CallPolicy {
  retry: RetryPolicy;
  /** The deadline of a call unless it passes its own `timeoutMs`; undefined = none. */
  timeoutMs: number | undefined;
  /** The bearer credential for a service, or undefined to send none. */
  credential(service: DescService): string | undefined;
  sleep: Sleep;
}

type UnaryFn = (request: unknown, options?: CallOptions) => Promise<unknown>;
type StreamFn = (request: unknown, options?: CallOptions) => AsyncIterable<unknown>;

/** Everything one call needs across its attempts. */
class Call {
  private readonly deadline: Deadline;
  private readonly idempotent: boolean;
  private readonly admin: boolean;
  private readonly base: CallOptions;

  constructor(
    private readonly policy: CallPolicy,
    method: DescMethod,
    request: unknown,
    options: CallOptions | undefined,
  ) {
    const headers = new Headers(options?.headers);
    const credential = policy.credential(method.parent);
    // A header the caller set wins: it lets one client act with another credential for one call.
    if (credential !== undefined && !headers.has("authorization")) {
      headers.set("authorization", `Bearer ${credential}`);
    }
    const timeoutMs = options?.timeoutMs ?? policy.timeoutMs;
    this.deadline = new Deadline(timeoutMs === undefined || timeoutMs <= 0 ? undefined : timeoutMs);
    this.idempotent = isIdempotent(method, request);
    this.admin = method.parent.typeName.startsWith("relay.admin.");
    this.base = { ...options, headers };
  }

  /** Options of the next attempt: what is left of the deadline (gRPC wants whole milliseconds). */
  attemptOptions(): CallOptions {
    const remaining = this.deadline.remainingMs();
    return { ...this.base, timeoutMs: remaining === undefined ? undefined : Math.max(1, Math.ceil(remaining)) };
  }

  /** Wait before retry number `retry`, or throw `err` when the call must not be tried again. */
  async backOff(err: RelayError, retry: number): Promise<void> {
    const wait = retryDelayMs(err, retry, this.policy.retry, {
      idempotent: this.idempotent,
      admin: this.admin,
      remainingMs: this.deadline.remainingMs(),
    });
    if (wait === undefined) {
      throw err;
    }
    try {
      await this.policy.sleep(wait, this.base.signal);
    } catch (reason) {
      throw toRelayError(reason); // aborted while waiting: still a RelayError (Code.Canceled)
    }
  }
}

function bindUnary(invoke: UnaryFn, method: DescMethod, policy: CallPolicy): UnaryFn {
  return async (request, options) => {
    const call = new Call(policy, method, request, options);
    for (let retry = 0; ; retry++) {
      try {
        return await invoke(request, call.attemptOptions());
      } catch (reason) {
        await call.backOff(toRelayError(reason), retry);
      }
    }
  };
}

function bindServerStream(invoke: StreamFn, method: DescMethod, policy: CallPolicy): StreamFn {
  return async function* (request, options) {
    const call = new Call(policy, method, request, options);
    for (let retry = 0; ; retry++) {
      // Once a message was delivered a retry would deliver it twice: only a
      // stream that failed before its first message may be tried again.
      let delivered = false;
      try {
        for await (const message of invoke(request, call.attemptOptions())) {
          delivered = true;
          yield message;
        }
        return;
      } catch (reason) {
        const err = toRelayError(reason);
        if (delivered) {
          throw err;
        }
        await call.backOff(err, retry);
      }
    }
  };
}

// Which RPC each bound method calls: lets paginate() read a method's shape from
// its descriptor given only the function (`client.apiKeys.listApiKeys`).
const boundMethods = new WeakMap<object, DescMethod>();

/** The RPC a method of a bound client calls, or undefined for any other value. */
export function methodDescriptor(fn: unknown): DescMethod | undefined {
  return typeof fn === "function" ? boundMethods.get(fn) : undefined;
}

/** A typed client of `service` over `transport`, with Relay's conventions on every method. */
export function bindService<S extends DescService>(service: S, transport: Transport, policy: CallPolicy): Client<S> {
  const raw = createClient(service, transport) as unknown as Record<string, UnaryFn & StreamFn>;
  const bound: Record<string, unknown> = {};
  for (const method of service.methods) {
    const invoke = raw[method.localName];
    if (invoke === undefined) {
      continue;
    }
    switch (method.methodKind) {
      case "unary":
        bound[method.localName] = bindUnary(invoke, method, policy);
        break;
      case "server_streaming":
        bound[method.localName] = bindServerStream(invoke, method, policy);
        break;
      default:
        // Relay has no client- or bidi-streaming RPCs; should one appear, it
        // works as connect made it, without retries or error mapping.
        bound[method.localName] = invoke;
    }
    boundMethods.set(bound[method.localName] as object, method);
  }
  return bound as Client<S>;
}
