-- Admission of one request: every rate-limit window and every spend cap in one
-- atomic round trip.  Nothing is recorded unless everything passes.
--
-- KEYS: n_w window keys, then for each cap its hash and its reservation zset,
--       then the tenant's noisy-neighbour flag.
-- ARGV: now_ms, request_id, n_w,
--       per window: kind ('m' = sliding minute, 'd' = calendar day), limit, cost,
--                   scalable ('1' = tightened while the tenant is flagged), reset_in_ms ('d' only),
--       n_c,
--       per cap: cap_micros, amount (reservation), lease_until_ms, ttl_ms (0 = no expiry).
--
-- Minute windows are hashes {epoch second -> count}; a window covers the
-- current second and the 59 before it.  Caps are hashes {spent, reserved,
-- r:<request id> -> reserved amount, warned}; the zset scores reservations by
-- lease deadline so a reservation whose process died is released here.
--
-- Replies (integers):
--   {0, per window: effective limit, remaining, reset_in_ms,
--       per cap: spent before this request}                      admitted
--     (the spent values let budget-aware routing read the caps' own state: docs/routing.md)
--   {1, window index, effective limit, used, retry_in_ms, too_large}  limited
--   {2, cap index, spent, reserved}                              cap exhausted
--   {3, cap index, ...}                                          caps to seed first

local SPAN = 60
local now_ms = tonumber(ARGV[1])
local now_s = math.floor(now_ms / 1000)
local request_id = ARGV[2]
local n_w = tonumber(ARGV[3])
local a = 4
local windows = {}
for i = 1, n_w do
  windows[i] = {kind = ARGV[a], limit = tonumber(ARGV[a + 1]), cost = tonumber(ARGV[a + 2]),
                scalable = ARGV[a + 3] == '1', reset = tonumber(ARGV[a + 4])}
  a = a + 5
end
local n_c = tonumber(ARGV[a])
a = a + 1
local caps = {}
for j = 1, n_c do
  caps[j] = {cap = tonumber(ARGV[a]), amount = tonumber(ARGV[a + 1]), lease = tonumber(ARGV[a + 2]),
             ttl = tonumber(ARGV[a + 3])}
  a = a + 4
end
local permille = tonumber(redis.call('GET', KEYS[n_w + 2 * n_c + 1]) or '1000') or 1000

-- Sum of the live buckets and the oldest live second; stale buckets are dropped.
-- No per-bucket tables and no sort: admission runs this for every window of every
-- request, and only a refusal needs the buckets in order (retry_after below).
local function minute_usage(key)
  local flat = redis.call('HGETALL', key)
  local used, oldest, stale = 0, nil, {}
  local horizon = now_s - SPAN
  for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec <= horizon then
      stale[#stale + 1] = flat[i]
    else
      used = used + tonumber(flat[i + 1])
      if oldest == nil or sec < oldest then
        oldest = sec
      end
    end
  end
  if #stale > 0 then
    redis.call('HDEL', key, unpack(stale))
  end
  return used, oldest
end

-- When enough of a sliding minute will have expired to fit `need` more: the
-- end of the bucket (oldest first) at which the freed count reaches `need`.
local function minute_retry_ms(key, need)
  local flat = redis.call('HGETALL', key)
  local buckets = {}
  for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec > now_s - SPAN then
      buckets[#buckets + 1] = {sec, tonumber(flat[i + 1])}
    end
  end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, b in ipairs(buckets) do
    freed = freed + b[2]
    if freed >= need then
      return (b[1] + SPAN) * 1000 - now_ms
    end
  end
  return SPAN * 1000
end

-- 1. Rate limits: check all, record nothing yet.
local state = {}
for i, w in ipairs(windows) do
  local limit = w.limit
  if w.scalable and permille < 1000 then
    limit = math.max(1, math.floor(limit * permille / 1000))
  end
  local used, oldest = 0, nil
  if w.kind == 'm' then
    used, oldest = minute_usage(KEYS[i])
  else
    used = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  if used + w.cost > limit then
    local too_large = 0
    local retry = w.reset
    if w.kind == 'm' then
      retry = SPAN * 1000
      if w.cost > limit then
        too_large = 1
      else
        retry = minute_retry_ms(KEYS[i], used + w.cost - limit)
      end
    elseif w.cost > limit then
      too_large = 1
    end
    return {1, i, limit, used, retry, too_large}
  end
  state[i] = {limit = limit, used = used, oldest = oldest}
end

-- 2. Spend caps: every window key must exist (else the caller seeds it from Postgres).
local missing = {}
for j = 1, n_c do
  if redis.call('EXISTS', KEYS[n_w + 2 * j - 1]) == 0 then
    missing[#missing + 1] = j
  end
end
if #missing > 0 then
  return {3, unpack(missing)}
end
for j, c in ipairs(caps) do
  local h, z = KEYS[n_w + 2 * j - 1], KEYS[n_w + 2 * j]
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now_ms)
  for _, id in ipairs(expired) do
    local r = redis.call('HGET', h, 'r:' .. id)
    if r then
      redis.call('HINCRBY', h, 'reserved', -tonumber(r))
      redis.call('HDEL', h, 'r:' .. id)
    end
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now_ms)
  end
  local spent = tonumber(redis.call('HGET', h, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
  if spent + reserved + c.amount > c.cap then
    return {2, j, spent, reserved}
  end
  c.spent = spent
end

-- 3. Everything passed: record.
local reply = {0}
for i, w in ipairs(windows) do
  local s = state[i]
  local reset = w.reset
  if w.kind == 'm' then
    if w.cost > 0 then
      redis.call('HINCRBY', KEYS[i], now_s, w.cost)
    end
    redis.call('EXPIRE', KEYS[i], SPAN * 2)
    reset = ((s.oldest or now_s) + SPAN) * 1000 - now_ms
  else
    redis.call('INCRBY', KEYS[i], w.cost)
    redis.call('PEXPIRE', KEYS[i], w.reset + 3600000)
  end
  reply[#reply + 1] = s.limit
  reply[#reply + 1] = s.limit - s.used - w.cost
  reply[#reply + 1] = reset
end
for j, c in ipairs(caps) do
  local h, z = KEYS[n_w + 2 * j - 1], KEYS[n_w + 2 * j]
  if c.amount > 0 then
    redis.call('HINCRBY', h, 'reserved', c.amount)
    redis.call('HSET', h, 'r:' .. request_id, c.amount)
    redis.call('ZADD', z, c.lease, request_id)
  end
  if c.ttl > 0 then
    redis.call('PEXPIRE', h, c.ttl)
    redis.call('PEXPIRE', z, c.ttl)
  end
  reply[#reply + 1] = c.spent
end
return reply
