-- After an attempt: correct the token estimate, and cool a key down after a
-- provider 429.
--
-- KEYS: tpm window, cool-down flag.
-- ARGV: taken_s (second of the acquire), now_s, delta tokens (actual - estimate), cool_ms (0 = none).
-- The correction lands in the bucket of the acquire, so it leaves the window
-- with the estimate it corrects; a bucket already out of the window is left.

local SPAN = 60
local taken, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local delta, cool_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
if delta ~= 0 and taken > now - SPAN then
  local v = redis.call('HINCRBY', KEYS[1], taken, delta)
  if v <= 0 then
    redis.call('HDEL', KEYS[1], taken)
  else
    redis.call('PEXPIRE', KEYS[1], (SPAN + 1) * 1000)
  end
end
if cool_ms > 0 then
  redis.call('SET', KEYS[2], 1, 'PX', cool_ms)
end
return 1
