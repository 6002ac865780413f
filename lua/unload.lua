-- unload.lua: remove a deleted product's sale state, leaving a tombstone; or, first,
-- stop it taking reservations.
--
-- KEYS[1..6] as purchase.lua (sale, free, buyers, orders, pending, tombstones)
-- ARGV[1] events channel  ARGV[2] product_id  ARGV[3] "stop" to stop (absent: unload)
--
-- Stopping marks a loaded sale `retiring`: purchase.lua answers "paused" (the purchase
-- path then finds the product deleted and answers 404) while releases and confirmations
-- still work, so that the reservations it holds are all there is to persist before it
-- goes. Unloading refuses while a reservation is not yet persisted
-- (its pending entry stands): some were answered 202, and the tombstone would lose them.
--
-- The sale hash becomes {deleted = 1}: purchases find no sale loaded, and load_sale.lua
-- refuses to write over it, so no rebuild, first load or read brings the sale of a
-- deleted product back (one that read the product before the deletion included).
--
-- Every instance hears a product_deleted event (its sold-out shortcut forgets the
-- product, so that attempts get the full path's 404).
--
-- Returns 1 if stopped (unloaded), 0 if there was no loaded sale to stop (reservations
-- are still pending: nothing unloaded).
if ARGV[3] == 'stop' then
  if not redis.call('HGET', KEYS[1], 'stock_total') then return 0 end
  redis.call('HSET', KEYS[1], 'retiring', '1')
  return 1
end
if redis.call('ZCARD', KEYS[5]) > 0 then return 0 end
for i = 1, 6 do redis.call('DEL', KEYS[i]) end
redis.call('HSET', KEYS[1], 'deleted', '1')
redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'product_deleted', product_id = ARGV[2]}))
return 1
