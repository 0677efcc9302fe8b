-- Read-only: how full each key's windows are, for ordering a provider's keys.
--
-- KEYS: per key, its rpm window, tpm window and cool-down flag (3 per key).
-- ARGV: now_s.
-- Reply: per key {requests, tokens, cool-down ms left (0 = none)}, flattened.

local SPAN = 60
local now = tonumber(ARGV[1])
local out = {}

local function used(key)
  local flat = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) > now - SPAN then
      total = total + tonumber(flat[i + 1])
    end
  end
  return total
end

for i = 1, #KEYS, 3 do
  out[#out + 1] = used(KEYS[i])
  out[#out + 1] = used(KEYS[i + 1])
  local ttl = redis.call('PTTL', KEYS[i + 2])
  out[#out + 1] = ttl > 0 and ttl or 0
end
return out
