-- unload.lua: remove a deleted product's sale state, leaving a tombstone.
--
-- KEYS[1..6] as purchase.lua (sale, free, buyers, orders, pending, tombstones)
-- ARGV[1] events channel  ARGV[2] product_id
--
-- The sale hash becomes {deleted = 1}: purchases find no sale loaded, and load_sale.lua
-- refuses to write over it, so no rebuild, first load or read brings the sale of a
-- deleted product back (one that read the product before the deletion included).
--
-- Every instance hears a product_deleted event (its sold-out shortcut forgets the
-- product, so that attempts get the full path's 404).
--
-- Returns 1.
for i = 1, 6 do redis.call('DEL', KEYS[i]) end
redis.call('HSET', KEYS[1], 'deleted', '1')
redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'product_deleted', product_id = ARGV[2]}))
return 1
