-- confirm.lua: mark reservations as persisted in MongoDB, and publish what was persisted.
--
-- KEYS[1..6] as purchase.lua (sale, free, buyers, orders, pending, tombstones)
-- ARGV[1] events channel
-- ARGV[2k], ARGV[2k+1] (k = 1, 2, ...) an order id, and the event to publish for it once
--   confirmed here ('' publishes nothing)
--
-- Returns, per order in ARGV order, 1 if it is now confirmed (or already was), 0 if Redis
-- holds no such reservation (lost, released or never made here). An order's event is
-- published either way: MongoDB holds the order.
local confirmed = {}
for i = 2, #ARGV, 2 do
  local order_id, event = ARGV[i], ARGV[i + 1]
  local existing = redis.call('HGET', KEYS[4], order_id)
  if existing then
    local user, unit, at, state = string.match(existing, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)')
    if state ~= 'C' then
      redis.call('HSET', KEYS[4], order_id, user .. '|' .. unit .. '|' .. at .. '|C')
    end
    redis.call('ZREM', KEYS[5], order_id)
    confirmed[#confirmed + 1] = 1
  else
    confirmed[#confirmed + 1] = 0
  end
  if event ~= '' then redis.call('PUBLISH', ARGV[1], event) end
end
return confirmed
