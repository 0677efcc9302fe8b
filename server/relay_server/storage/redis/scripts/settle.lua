-- Settlement of one request after it ended: tokens-per-minute reconciled from
-- the input estimate to the real total, and each spend-cap reservation
-- replaced by the real cost.  One atomic round trip.
--
-- KEYS: n_t token-window keys, then for each cap its hash and its reservation zset.
-- ARGV: admit_s (second the request was admitted in), now_ms, n_t,
--       per token window: delta (real tokens - estimated tokens),
--       request_id, n_c,
--       per cap: actual_micros, warn_at_micros (0 = no warning).
--
-- A correction lands in the bucket of the admission second, so it leaves the
-- window together with the estimate it corrects (and is dropped once that
-- bucket is out of the window).  A cap whose key vanished (Redis lost it) is
-- left alone: the next admission seeds it from the request log, which holds
-- this request's cost.
--
-- Reply: per cap {spent after (-1 if the key was missing), 1 if the warning
-- threshold was crossed for the first time in this window else 0}.

local SPAN = 60
local admit_s = tonumber(ARGV[1])
local now_s = math.floor(tonumber(ARGV[2]) / 1000)
local n_t = tonumber(ARGV[3])
local a = 4
for i = 1, n_t do
  local delta = tonumber(ARGV[a])
  a = a + 1
  if delta ~= 0 and admit_s > now_s - SPAN and redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('HINCRBY', KEYS[i], admit_s, delta)
    if v <= 0 then
      redis.call('HDEL', KEYS[i], admit_s)
    end
  end
end
local request_id = ARGV[a]
local n_c = tonumber(ARGV[a + 1])
a = a + 2
local reply = {}
for j = 1, n_c do
  local h, z = KEYS[n_t + 2 * j - 1], KEYS[n_t + 2 * j]
  local actual, warn_at = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local spent, warned = -1, 0
  if redis.call('EXISTS', h) == 1 then
    local r = redis.call('HGET', h, 'r:' .. request_id)
    if r then
      redis.call('HINCRBY', h, 'reserved', -tonumber(r))
      redis.call('HDEL', h, 'r:' .. request_id)
    end
    redis.call('ZREM', z, request_id)
    spent = tonumber(redis.call('HGET', h, 'spent') or '0')
    if actual > 0 then
      spent = redis.call('HINCRBY', h, 'spent', actual)
    end
    if warn_at > 0 and spent >= warn_at and redis.call('HSETNX', h, 'warned', '1') == 1 then
      warned = 1
    end
  end
  reply[#reply + 1] = spent
  reply[#reply + 1] = warned
end
return reply
