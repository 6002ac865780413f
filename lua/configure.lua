-- configure.lua: change a loaded sale's window and one-per-user rule.
--
-- KEYS[1] sale hash
-- ARGV[1] one_per_user (0/1)  ARGV[2] starts_at_ms (0 = open)  ARGV[3] ends_at_ms (0 = never)
--
-- Returns 1 if changed, 0 if the sale is not loaded (the next load reads MongoDB; a
-- deleted product's tombstone is not a loaded sale).
if not redis.call('HGET', KEYS[1], 'stock_total') then return 0 end
redis.call('HSET', KEYS[1], 'one_per_user', ARGV[1], 'starts_at_ms', ARGV[2], 'ends_at_ms', ARGV[3])
return 1
