-- wrk script for Relay's bench: POSTs one JSON body, optional request budget,
-- and prints the summary as one JSON line (BENCH_JSON {...}) when done.
--
-- Inputs come from the environment so no secret shows in argv:
--   BENCH_BODY_FILE            path of the request body
--   BENCH_AUTH                 the Authorization header value (may be empty)
--   BENCH_REQUESTS_PER_THREAD  stop each thread after this many responses (0 = no budget)
--   BENCH_HEADERS              more headers, one "Name: value" per line (a peer gateway's routing)

local body_file = os.getenv("BENCH_BODY_FILE")
local f = assert(io.open(body_file, "rb"), "cannot open BENCH_BODY_FILE")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH") or ""
if auth ~= "" then
  wrk.headers["Authorization"] = auth
end

for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end

local budget = tonumber(os.getenv("BENCH_REQUESTS_PER_THREAD") or "0") or 0
if budget > 0 then
  -- Defined only with a budget: a response() hook makes wrk parse every body.
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen == budget then
      -- wrk itself always sleeps the whole -d: tell the driver, which stops wrk
      -- with SIGINT once every thread is done (wrk then reports the real run time).
      io.write("BENCH_THREAD_DONE\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"max_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
