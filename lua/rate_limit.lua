-- rate_limit.lua: generic cell rate algorithm (GCRA): `limit` requests per `window_ms`,
-- spread evenly, with a burst of up to `limit`.
--
-- KEYS[1] the limit's state (theoretical arrival time, ms)
-- ARGV[1] now_ms  ARGV[2] window_ms  ARGV[3] limit
--
-- Returns {allowed (1/0), remaining, retry_after_ms, reset_ms}.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local interval = window / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(math.ceil(new_tat - now), 1))
return {1, math.floor((now + window - new_tat) / interval), 0, math.ceil(new_tat - now)}
