-- confirm.lua: mark a reservation as persisted in MongoDB.
--
-- KEYS[1..6] as purchase.lua (sale, free, buyers, orders, pending, tombstones)
-- ARGV[1] order_id
--
-- Returns 1 if the order is now confirmed (or already was), 0 if Redis holds no such
-- reservation (lost, released or never made here).
local existing = redis.call('HGET', KEYS[4], ARGV[1])
if not existing then return 0 end
local user, unit, at, state = string.match(existing, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
if state ~= 'C' then
  redis.call('HSET', KEYS[4], ARGV[1], user .. '|' .. unit .. '|' .. at .. '|C')
end
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
