-- A provider's circuit breaker, shared by every worker.
--
-- KEYS[1]: the circuit hash (state, failures, open_until, probe_until; ms).
-- ARGV: op, now_ms, threshold, cooldown_ms, probe_lease_ms.
--   failure: one more consecutive failure; opens the circuit at the threshold,
--            re-opens it (fresh cool-down) when it was open or half-open.
--   success: closes the circuit and clears the count.
--   probe:   may this caller send a request?  Closed: yes.  Open within the
--            cool-down: no.  After it (half-open): yes for one caller at a
--            time, who holds the probe lease until it reports or the lease ends.
--   release: give back a probe lease unused.
-- Reply: failure/success -> {state, failures, open_until, changed (1 if opened/closed now)};
--        probe -> {1|0}, and a second 1 when the yes took the half-open probe lease; release -> {1}.

local key, op, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local threshold, cooldown, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fields = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'probe_until')
local state = fields[1] or 'closed'
local failures = tonumber(fields[2] or '0')
local open_until = tonumber(fields[3] or '0')
local probe_until = tonumber(fields[4] or '0')
local DAY_MS = 86400000

if op == 'failure' then
  failures = failures + 1
  local changed = 0
  if state == 'open' or failures >= threshold then
    if state ~= 'open' then changed = 1 end
    state = 'open'
    open_until = now + cooldown
    probe_until = 0
  end
  redis.call('HSET', key, 'state', state, 'failures', failures, 'open_until', open_until, 'probe_until', probe_until)
  redis.call('PEXPIRE', key, DAY_MS)
  return {state, failures, open_until, changed}
elseif op == 'success' then
  local changed = 0
  if state == 'open' then changed = 1 end
  if state ~= 'closed' or failures > 0 then
    redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'open_until', 0, 'probe_until', 0)
    redis.call('PEXPIRE', key, DAY_MS)
  end
  return {'closed', 0, 0, changed}
elseif op == 'probe' then
  if state ~= 'open' then return {1} end
  if now < open_until or probe_until > now then return {0} end
  redis.call('HSET', key, 'probe_until', now + lease)
  return {1, 1}
elseif op == 'release' then
  if probe_until > 0 then redis.call('HSET', key, 'probe_until', 0) end
  return {1}
end
return redis.error_reply('unknown circuit op ' .. tostring(op))
