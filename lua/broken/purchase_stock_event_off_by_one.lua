-- broken/purchase_stock_event_off_by_one.lua: a deliberately BROKEN copy of purchase.lua.
--
-- BROKEN (stock_event_off_by_one), run only with the `broken` feature and
-- `Broken::StockEventOffByOne`: the `stock_updated` event a reservation publishes counts
-- one unit fewer than are left (the last unit's event says -1). The sale itself and the
-- script's answer are right. Besides this header, only the line marked BROKEN differs
-- from purchase.lua.
--
-- KEYS[1] sale hash      (stock_total, next_unit, one_per_user, starts_at_ms, ends_at_ms, paused,
--                         retiring: a deleted product's sale about to go, see unload.lua)
-- KEYS[2] free zset      (returned units, score = unit number)
-- KEYS[3] buyers hash    (user_id -> live order count)
-- KEYS[4] orders hash    (order_id -> "user_id|unit|reserved_at_ms|state[|rule]", state R
--                         or C; rule, on a reservation: 1 if the one-per-user rule held
--                         when it was taken, else 0, which decides its order's buyer slot)
-- KEYS[5] pending zset   (order ids not yet confirmed in MongoDB, score = reserved_at_ms)
-- KEYS[6] tombstone set  (order ids released for good)
-- ARGV[1] order_id  ARGV[2] user_id  ARGV[3] now_ms  ARGV[4] events channel  ARGV[5] product_id
--
-- Returns one of:
--   {"reserved", unit, remaining, rule}
--   {"replay", unit, state, user_id}   the order already holds a unit
--   {"released"} {"sold_out"} {"already_purchased"} {"not_started"} {"ended"}
--   {"not_loaded"} {"paused"}
--
-- Every read and check comes before the first write: a Redis script has no rollback.
local sale = redis.call('HMGET', KEYS[1], 'stock_total', 'next_unit', 'one_per_user',
  'starts_at_ms', 'ends_at_ms', 'paused', 'retiring')
local stock_total = tonumber(sale[1])
local next_unit = tonumber(sale[2])
if not stock_total or not next_unit then return {'not_loaded'} end
if sale[6] == '1' or sale[7] == '1' then return {'paused'} end

local existing = redis.call('HGET', KEYS[4], ARGV[1])
if existing then
  local user, unit, _, state = string.match(existing, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)')
  return {'replay', tonumber(unit), state, user}
end
if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then return {'released'} end

local now = tonumber(ARGV[3])
local starts = tonumber(sale[4])
local ends = tonumber(sale[5])
if starts and now < starts then return {'not_started'} end
if ends and ends > 0 and now >= ends then return {'ended'} end

if sale[3] == '1' and tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') > 0 then
  return {'already_purchased'}
end

local free_count = redis.call('ZCARD', KEYS[2])
local fresh_left = math.max(stock_total - next_unit + 1, 0)
if free_count + fresh_left <= 0 then return {'sold_out'} end
local lowest_free = nil
if free_count > 0 then lowest_free = redis.call('ZRANGE', KEYS[2], 0, 0)[1] end

-- Writes start here; nothing below can fail a check.
local unit
if lowest_free then
  unit = tonumber(lowest_free)
  redis.call('ZREM', KEYS[2], lowest_free)
else
  unit = next_unit
  redis.call('HSET', KEYS[1], 'next_unit', next_unit + 1)
end
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
local rule = '0'
if sale[3] == '1' then rule = '1' end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. '|' .. unit .. '|' .. ARGV[3] .. '|R|' .. rule)
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])

local remaining = free_count + fresh_left - 1
redis.call('PUBLISH', ARGV[4], cjson.encode({type = 'stock_updated', product_id = ARGV[5], remaining = remaining - 1})) -- BROKEN: one unit too few
if remaining == 0 then
  redis.call('PUBLISH', ARGV[4], cjson.encode({type = 'sold_out', product_id = ARGV[5], remaining = 0}))
end
return {'reserved', unit, remaining, rule}
