-- Latency EWMAs of model routes (docs/routing.md, lowest-latency strategy).
--
-- KEYS: one hash per sample's route  {ttft, total, n, at}
-- ARGV: alpha (0..1], ttl_s, then per sample: ttft_ms, total_ms, at_ms
--
-- Atomic read-modify-write, so workers flushing samples of the same route at the
-- same moment never lose one.  The first sample of a route is taken as it is.
local alpha = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local ttft = tonumber(ARGV[3 * i])
  local total = tonumber(ARGV[3 * i + 1])
  local at = ARGV[3 * i + 2]
  local old = redis.call('HMGET', key, 'ttft', 'total')
  if old[1] then
    ttft = alpha * ttft + (1 - alpha) * tonumber(old[1])
    total = alpha * total + (1 - alpha) * tonumber(old[2])
  end
  redis.call('HSET', key, 'ttft', string.format('%.3f', ttft), 'total', string.format('%.3f', total), 'at', at)
  redis.call('HINCRBY', key, 'n', 1)
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
