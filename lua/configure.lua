-- configure.lua: change a loaded sale's window and one-per-user rule.
--
-- KEYS[1] sale hash
-- ARGV[1] one_per_user (0/1)  ARGV[2] starts_at_ms (0 = open)  ARGV[3] ends_at_ms (0 = never)
-- ARGV[4] the product revision these settings are from
--
-- The sale hash keeps the revision its settings came from (written here and by
-- load_sale.lua), and settings never go back to an earlier one: a write's live step
-- that read its revision before a later write claimed the next one, or that Redis runs
-- late (sent before a pause, run after a newer write's), changes nothing.
--
-- Returns 1 if applied, 0 if the sale is not loaded (the next load reads MongoDB; a
-- deleted product's tombstone is not a loaded sale), 2 if the sale holds the settings
-- of a later revision (nothing changed).
if not redis.call('HGET', KEYS[1], 'stock_total') then return 0 end
local revision = tonumber(ARGV[4])
if not revision then return redis.error_reply('configure.lua: the revision is not a number') end
local applied = tonumber(redis.call('HGET', KEYS[1], 'revision'))
if applied and applied > revision then return 2 end
redis.call('HSET', KEYS[1], 'one_per_user', ARGV[1], 'starts_at_ms', ARGV[2], 'ends_at_ms', ARGV[3],
  'revision', ARGV[4])
return 1
