-- stock.lua: read a product's live sale state (read only).
--
-- KEYS[1] sale hash  KEYS[2] free zset  KEYS[3] reissue hash
--
-- Returns {} when the sale is not loaded, else
--   {stock_total, next_unit, free_count, paused (0/1), one_per_user (0/1), reissue_waiting}
local sale = redis.call('HMGET', KEYS[1], 'stock_total', 'next_unit', 'paused', 'one_per_user')
local stock_total = tonumber(sale[1])
local next_unit = tonumber(sale[2])
if not stock_total or not next_unit then return {} end
local paused = 0
if sale[3] == '1' then paused = 1 end
local one_per_user = 0
if sale[4] == '1' then one_per_user = 1 end
return {stock_total, next_unit, redis.call('ZCARD', KEYS[2]), paused, one_per_user, redis.call('HLEN', KEYS[3])}
