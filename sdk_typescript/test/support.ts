/** Helpers shared by the tests: Relay-shaped errors, as the server's error mapping builds them. */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";

export interface RelayShapedError {
  code: Code;
  reason: string;
  httpStatus: string;
  type?: string;
  requestId?: string;
  headers?: Record<string, string>;
  domain?: string;
}

/** A ConnectError carrying the trailers Relay sends: ErrorInfo detail, x-relay-* and retry-after. */
export function relayShapedError(e: RelayShapedError): ConnectError {
  const info = create(ErrorInfoSchema, {
    reason: e.reason,
    domain: e.domain ?? "relay.gateway",
    metadata: { http_status: e.httpStatus, type: e.type ?? "invalid_request_error", request_id: e.requestId ?? "req_1" },
  });
  const body = JSON.stringify({ error: { message: "m", type: e.type ?? "invalid_request_error", param: null, code: e.reason.toLowerCase() } });
  const err = new ConnectError("m", e.code, { "x-relay-http-status": e.httpStatus, "x-relay-error": body, ...e.headers });
  // The incoming form, exactly as the gRPC transport decodes grpc-status-details-bin.
  err.details = [{ type: ErrorInfoSchema.typeName, value: toBinary(ErrorInfoSchema, info) }];
  return err;
}
