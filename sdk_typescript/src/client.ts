/**
 * RelayClient: one gRPC (HTTP/2) connection to Relay, typed access to every service.
 *
 * Data-plane services (relay.v1) authenticate with the API key; admin services
 * (relay.admin.v1) with the admin token when one is given, else the API key
 * (a management key may manage its own tenant's keys).
 */
import type { DescService, JsonValue } from "@bufbuild/protobuf";
import type { CallOptions, Client, Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { ApiKeyService } from "./gen/relay/admin/v1/api_keys_pb.js";
import { AuditLogService } from "./gen/relay/admin/v1/audit_pb.js";
import { ModelCatalogService } from "./gen/relay/admin/v1/catalog_pb.js";
import { ProviderCredentialService } from "./gen/relay/admin/v1/credentials_pb.js";
import { TenantService } from "./gen/relay/admin/v1/tenants_pb.js";
import type { ChatCompletion, ChatCompletionChunk } from "./gen/relay/v1/chat_pb.js";
import type { EmbeddingList } from "./gen/relay/v1/embeddings_pb.js";
import { UsageService } from "./gen/relay/admin/v1/usage_pb.js";
import { InferenceService } from "./gen/relay/v1/inference_service_pb.js";
import { OpenAIService } from "./gen/relay/v1/openai_service_pb.js";
import { paginate, type ListMethod, type PageItem, type PageRequest, type PageResponse, type Pager } from "./pagers.js";
import { chatRequest, embeddingRequest, type ChatMessageJson, type RequestParams } from "./requests.js";
import { DEFAULT_RETRY_POLICY, sleep, type RetryPolicy } from "./retry.js";
import { bindService, type CallPolicy } from "./services.js";

export interface RelayClientOptions {
  /** Relay's gRPC address: "host:port" (plaintext HTTP/2) or a URL, "https://relay.example.com". */
  target: string;
  /** An API key (`rly_live_sk_…`, `rly_test_sk_…`), sent to data-plane services. */
  apiKey?: string;
  /** The platform admin token, sent to admin services. */
  adminToken?: string;
  /** One deadline per call, retries and waits included, unless the call passes `timeoutMs`. Default 60 s; 0 = none. */
  timeoutMs?: number;
  /** Retries of UNAVAILABLE / RESOURCE_EXHAUSTED failures of calls that cannot act twice (see retry.ts). Default 2; 0 disables. */
  maxRetries?: number;
  /** The first retry's backoff when the server gave no `retry-after`. Default 500 ms. */
  initialBackoffMs?: number;
  /** The backoff ceiling. Default 8 s. */
  maxBackoffMs?: number;
  /** Use this transport instead of connecting to `target` (custom TLS, proxies, in-memory tests). */
  transport?: Transport;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** The model listing of the data plane: `listModels` and `getModel` of relay.v1.OpenAIService. */
export type ModelsClient = Pick<Client<typeof OpenAIService>, "listModels" | "getModel">;

function baseUrl(target: string): string {
  if (/^https?:\/\//.test(target)) {
    return target;
  }
  if (target.trim() === "" || target.includes("/")) {
    throw new TypeError(`target must be "host:port" or an http(s) URL, got ${JSON.stringify(target)}`);
  }
  return `http://${target}`;
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isFinite(chosen) || chosen < 0) {
    throw new RangeError(`${name} must be a non-negative number, got ${value}`);
  }
  return chosen;
}

export class RelayClient {
  /** relay.v1.InferenceService: typed chat, completions and embeddings. */
  readonly inference: Client<typeof InferenceService>;
  /** The models the API key may call. */
  readonly models: ModelsClient;
  /** relay.admin.v1.ApiKeyService. */
  readonly apiKeys: Client<typeof ApiKeyService>;
  /** relay.admin.v1.TenantService. */
  readonly tenants: Client<typeof TenantService>;
  /** relay.admin.v1.UsageService. */
  readonly usage: Client<typeof UsageService>;
  /** relay.admin.v1.ModelCatalogService. */
  readonly catalog: Client<typeof ModelCatalogService>;
  /** relay.admin.v1.ProviderCredentialService. */
  readonly credentials: Client<typeof ProviderCredentialService>;
  /** relay.admin.v1.AuditLogService. */
  readonly audit: Client<typeof AuditLogService>;

  private readonly transport: Transport;
  private readonly sessions: Http2SessionManager | undefined;
  private readonly policy: CallPolicy;

  constructor(options: RelayClientOptions) {
    const retry: RetryPolicy = {
      maxRetries: nonNegative("maxRetries", options.maxRetries, DEFAULT_RETRY_POLICY.maxRetries),
      initialBackoffMs: nonNegative("initialBackoffMs", options.initialBackoffMs, DEFAULT_RETRY_POLICY.initialBackoffMs),
      maxBackoffMs: nonNegative("maxBackoffMs", options.maxBackoffMs, DEFAULT_RETRY_POLICY.maxBackoffMs),
    };
    const timeoutMs = nonNegative("timeoutMs", options.timeoutMs, DEFAULT_TIMEOUT_MS);
    const { apiKey, adminToken } = options;
    this.policy = {
      retry,
      timeoutMs: timeoutMs === 0 ? undefined : timeoutMs,
      credential: (service: DescService) =>
        service.typeName.startsWith("relay.admin.") ? (adminToken ?? apiKey) : apiKey,
      sleep,
    };
    if (options.transport !== undefined) {
      this.transport = options.transport;
      this.sessions = undefined;
    } else {
      const url = baseUrl(options.target);
      // Our own session manager, so that close() can end the connection.
      this.sessions = new Http2SessionManager(url);
      this.transport = createGrpcTransport({ baseUrl: url, sessionManager: this.sessions });
    }
    this.inference = this.service(InferenceService);
    const openai = this.service(OpenAIService);
    this.models = { listModels: openai.listModels, getModel: openai.getModel };
    this.apiKeys = this.service(ApiKeyService);
    this.tenants = this.service(TenantService);
    this.usage = this.service(UsageService);
    this.catalog = this.service(ModelCatalogService);
    this.credentials = this.service(ProviderCredentialService);
    this.audit = this.service(AuditLogService);
  }

  /** A typed client of any generated service descriptor, with the same conventions. */
  service<S extends DescService>(service: S): Client<S> {
    return bindService(service, this.transport, this.policy);
  }

  /**
   * One chat completion from OpenAI-style messages and parameters
   * (`{ temperature: 0.2, max_completion_tokens: 64 }`); parameters the typed
   * schema lacks go in `extraBody`.  Never retried, like every inference call.
   */
  async chat(model: string, messages: readonly ChatMessageJson[], params?: RequestParams, options?: CallOptions): Promise<ChatCompletion> {
    return this.inference.createChatCompletion(chatRequest(model, messages, params), options);
  }

  /**
   * A streamed chat completion: `for await` over its chunks (breaking out cancels
   * the call).  Pass `{ stream_options: { include_usage: true } }` for a final usage chunk.
   */
  chatStream(model: string, messages: readonly ChatMessageJson[], params?: RequestParams, options?: CallOptions): AsyncIterable<ChatCompletionChunk> {
    return this.inference.streamChatCompletion(chatRequest(model, messages, params), options);
  }

  /** Embeddings of `input` (a string, a list of strings, or token ids). */
  async embed(model: string, input: JsonValue, params?: RequestParams, options?: CallOptions): Promise<EmbeddingList> {
    return this.inference.createEmbedding(embeddingRequest(model, input, params), options);
  }

  /**
   * A lazy pager over a paginated `List*` method of this client's services:
   * `for await (const key of client.paginate(client.apiKeys.listApiKeys, { tenantId }))`
   * yields every item, `.pages()` every raw page; a page is fetched only when
   * the loop reaches it.  `options` apply to each page's call.
   */
  paginate<Req extends PageRequest, Page extends PageResponse>(
    list: ListMethod<Req, Page>,
    request: Req,
    options?: CallOptions,
  ): Pager<PageItem<Page>, Page> {
    return paginate(list, request, options);
  }

  /** Close the connection (open streams end). An idle client does not keep Node running either way. */
  close(): void {
    this.sessions?.abort();
  }
}
