-- Take one request slot on a provider key, if its windows have room.
--
-- KEYS: rpm window, tpm window, cool-down flag (all of one provider: same hash tag).
-- ARGV: now_s, rpm_limit (0 = none), tpm_limit (0 = none), estimated tokens.
-- Windows are hashes epoch-second -> count over the last 60 s; expired
-- seconds are pruned here.  A request larger than the whole TPM cap still
-- passes on an idle key (it could never pass otherwise; the provider decides).
-- Reply: {1, now_s} taken | {0, reason} with reason 1 rpm, 2 tpm, 3 cooling down.

local SPAN = 60
local now = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, 3}
end

local function used(key)
  local flat = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) > now - SPAN then
      total = total + tonumber(flat[i + 1])
    else
      redis.call('HDEL', key, flat[i])
    end
  end
  return total
end

local rpm_limit, tpm_limit, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if rpm_limit > 0 and used(KEYS[1]) + 1 > rpm_limit then
  return {0, 1}
end
local tokens = used(KEYS[2])
if tpm_limit > 0 and tokens > 0 and tokens + cost > tpm_limit then
  return {0, 2}
end
redis.call('HINCRBY', KEYS[1], now, 1)
redis.call('PEXPIRE', KEYS[1], (SPAN + 1) * 1000)
if cost > 0 then
  redis.call('HINCRBY', KEYS[2], now, cost)
  redis.call('PEXPIRE', KEYS[2], (SPAN + 1) * 1000)
end
return {1, now}
