-- Relay's REST error shaping (Envoy Lua HTTP filter).
--
-- The filter sits BEFORE the gRPC-JSON transcoder in the HTTP filter chain, so on
-- the response path it runs AFTER the transcoder and sees the REST response.
--
-- Contract with the gRPC server: a failed call ends with a real gRPC status and,
-- sent before any message (a trailers-only response, which therefore arrives here
-- as response headers), the metadata
--   x-relay-http-status: the exact REST status (402, 422, 502, ... which no gRPC
--                        code maps to),
--   x-relay-error:       the exact OpenAI JSON body (ASCII).
-- Any other metadata in the same trailers (retry-after, x-should-retry, ...) is
-- left alone and reaches the client as a header.
--
-- A gRPC error without those annotations (an unhandled exception, a message over
-- the server's size limit, ...) still gets an OpenAI-shaped body, built from
-- grpc-status and grpc-message, so a REST client never sees an empty error.
-- Either way the grpc-* bookkeeping headers never leak to REST clients.
--
-- On the request path it keeps the gRPC server from ever seeing a header it
-- cannot take (every one of those failed the call with a 500): names outside
-- gRPC's metadata alphabet (HTTP allows "|", "%", "~", "!", ...), "-bin"
-- headers (gRPC base64-decodes them), and grpc-* headers (a client's
-- grpc-timeout or grpc-encoding would steer the server).  They are dropped, as
-- proxies drop headers they cannot forward.  A native gRPC content type is
-- refused: this port speaks REST only.

-- gRPC status code -> the lowercase name used as the fallback error code.
local GRPC_CODE_NAMES = {
  ["1"] = "cancelled", ["2"] = "unknown", ["3"] = "invalid_argument",
  ["4"] = "deadline_exceeded", ["5"] = "not_found", ["6"] = "already_exists",
  ["7"] = "permission_denied", ["8"] = "resource_exhausted",
  ["9"] = "failed_precondition", ["10"] = "aborted", ["11"] = "out_of_range",
  ["12"] = "unimplemented", ["13"] = "internal", ["14"] = "unavailable",
  ["15"] = "data_loss", ["16"] = "unauthenticated",
}

-- grpc-message is percent-encoded on the wire (gRPC HTTP/2 spec).
local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- Escape for a JSON string literal: quote, backslash and every control byte.
-- Bytes >= 0x80 pass through: grpc-message is UTF-8, which JSON accepts as is.
local function json_escape(s)
  return (s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end))
end

local function error_type(status)
  local n = tonumber(status) or 500
  if n == 429 then return "rate_limit_error" end
  if n >= 500 then return "server_error" end
  return "invalid_request_error"
end

-- gRPC metadata keys: lowercase letters, digits, "_", "-" and "." only.
local function forwardable(name)
  if string.sub(name, 1, 1) == ":" then return true end  -- HTTP/2 pseudo-headers
  if not string.match(name, "^[0-9a-z_%.%-]+$") then return false end
  if string.sub(name, 1, 5) == "grpc-" then return false end
  return string.sub(name, -4) ~= "-bin"
end

-- The Anthropic door's model list: Anthropic's SDKs GET /v1/models (and
-- /v1/models/{id}) with an `anthropic-version` header and expect Anthropic's
-- list shape.  This filter runs before the transcoder, so pointing the path at
-- the door's own route is all it takes (the route, /v1/, stays the same).
local function anthropic_models(h)
  if h:get(":method") ~= "GET" or h:get("anthropic-version") == nil then return end
  local path = h:get(":path") or ""
  local rest = string.match(path, "^/v1/models(.*)$")
  if rest ~= nil and (rest == "" or string.match(rest, "^[/?]")) then
    h:replace(":path", "/v1/anthropic/models" .. rest)
  end
end

function envoy_on_request(handle)
  local h = handle:headers()
  local content_type = h:get("content-type") or ""
  if string.sub(string.lower(content_type), 1, 16) == "application/grpc" then
    -- Envoy frames a local reply to a gRPC request as gRPC (HTTP 200); the
    -- annotations make envoy_on_response turn it into the REST error.
    handle:respond({[":status"] = "415", ["x-relay-http-status"] = "415", ["x-relay-error"] =
      '{"error":{"message":"This port serves REST (JSON); send gRPC to the gRPC port instead.",' ..
      '"type":"invalid_request_error","param":null,"code":"unsupported_media_type"}}'}, "")
    return
  end
  local drop = nil
  for name, _ in pairs(h) do
    if not forwardable(name) then
      drop = drop or {}
      drop[#drop + 1] = name
    end
  end
  if drop ~= nil then
    -- Headers cannot be changed while they are being iterated.
    for _, name in ipairs(drop) do h:remove(name) end
  end
  anthropic_models(h)
end

function envoy_on_response(handle)
  local h = handle:headers()
  local status = h:get("x-relay-http-status")
  local body = h:get("x-relay-error")
  local grpc_status = h:get("grpc-status")
  local failed = grpc_status ~= nil and grpc_status ~= "0"

  if status ~= nil or body ~= nil or failed then
    -- Without an annotation, keep the status the transcoder chose for the gRPC code.
    status = status or h:get(":status")
    if not string.match(status or "", "^[1-5]%d%d$") then status = "500" end
    if body == nil then
      local message = pct_decode(h:get("grpc-message") or "")
      if message == "" then message = "The server failed to process the request." end
      body = string.format(
        '{"error":{"message":"%s","type":"%s","param":null,"code":"%s"}}',
        json_escape(message), error_type(status),
        GRPC_CODE_NAMES[grpc_status or ""] or "server_error")
    end
  end

  h:remove("grpc-status")
  h:remove("grpc-message")
  h:remove("grpc-status-details-bin")
  h:remove("grpc-accept-encoding")
  h:remove("x-relay-http-status")
  h:remove("x-relay-error")

  if body == nil then return end
  h:replace(":status", status)
  h:replace("content-type", "application/json")
  -- body(true) wraps even a headers-only response, which is what a
  -- trailers-only gRPC error becomes after transcoding.
  handle:body(true):setBytes(body)
end
