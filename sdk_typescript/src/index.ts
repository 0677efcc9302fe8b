/**
 * The Relay TypeScript SDK: `RelayClient`, its errors, and the generated
 * message types and service descriptors (namespaced by proto package).
 */
export { RelayClient, type ModelsClient, type RelayClientOptions } from "./client.js";
export {
  AuthenticationError,
  BadRequestError,
  Code,
  ConflictError,
  ERROR_DOMAIN,
  InternalServerError,
  ModelNotFoundError,
  NoProviderAvailableError,
  NotFoundError,
  PaymentRequiredError,
  PermissionDeniedError,
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
  UnimplementedError,
  UnprocessableEntityError,
  errorClass,
  toRelayError,
  type OpenAIErrorObject,
  type RelayErrorInit,
} from "./errors.js";
export { Pager, paginate, type ListMethod, type PageItem, type PageRequest, type PageResponse } from "./pagers.js";
export { chatRequest, embeddingRequest, type ChatMessageJson, type RequestParams } from "./requests.js";
export { DEFAULT_RETRY_POLICY, type RetryPolicy } from "./retry.js";
export { fromValue, toValue } from "./values.js";
/** Messages, enums and service descriptors of relay.v1: `relay.ChatCompletionRequestSchema`, … */
export * as relay from "./gen/relay/v1/index.js";
/** Messages, enums and service descriptors of relay.admin.v1: `admin.ApiKeyService`, … */
export * as admin from "./gen/relay/admin/v1/index.js";
