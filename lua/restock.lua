-- restock.lua: raise a product's stock to the total recorded in MongoDB.
--
-- KEYS[1] sale hash  KEYS[2] free zset
-- ARGV[1] new stock_total (never lowers it)  ARGV[2] events channel  ARGV[3] product_id
--
-- Returns remaining units after the restock, or -1 if the sale is not loaded.
local sale = redis.call('HMGET', KEYS[1], 'stock_total', 'next_unit')
local stock_total = tonumber(sale[1])
local next_unit = tonumber(sale[2])
if not stock_total or not next_unit then return -1 end
local wanted = tonumber(ARGV[1])
if wanted > stock_total then
  redis.call('HSET', KEYS[1], 'stock_total', wanted)
  stock_total = wanted
end
local remaining = redis.call('ZCARD', KEYS[2]) + math.max(stock_total - next_unit + 1, 0)
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'stock_updated', product_id = ARGV[3], remaining = remaining}))
return remaining
