-- release.lua: give a reservation's unit and buyer slot back, for good.
--
-- The caller has already made the order impossible to persist (a tombstone document
-- with the order's _id exists in MongoDB), so a late insert cannot oversell.
--
-- KEYS[1..6] as purchase.lua (sale, free, buyers, orders, pending, tombstones)
-- ARGV[1] order_id  ARGV[2] events channel  ARGV[3] product_id
--
-- Returns {released (1 or 0), remaining}; remaining is -1 if the sale is not loaded.
-- Returns {-1, -1} and changes nothing if the sale is paused: a rebuild is replacing its
-- state with what it read from MongoDB, perhaps before this order's tombstone, so the
-- caller must release again once the rebuild has loaded.
local sale = redis.call('HMGET', KEYS[1], 'stock_total', 'next_unit', 'paused')
local stock_total = tonumber(sale[1])
local next_unit = tonumber(sale[2])
if not stock_total or not next_unit then return {0, -1} end
if sale[3] == '1' then return {-1, -1} end
local existing = redis.call('HGET', KEYS[4], ARGV[1])
local free_count = redis.call('ZCARD', KEYS[2])
local remaining = free_count + math.max(stock_total - next_unit + 1, 0)
if not existing then
  redis.call('SADD', KEYS[6], ARGV[1])
  return {0, remaining}
end
local user, unit = string.match(existing, '^([^|]*)|([^|]*)|')
local held = tonumber(redis.call('HGET', KEYS[3], user) or '0')

redis.call('SADD', KEYS[6], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if held <= 1 then
  redis.call('HDEL', KEYS[3], user)
else
  redis.call('HINCRBY', KEYS[3], user, -1)
end
redis.call('ZADD', KEYS[2], tonumber(unit), unit)
remaining = remaining + 1
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'stock_updated', product_id = ARGV[3], remaining = remaining}))
return {1, remaining}
