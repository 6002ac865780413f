-- load_sale.lua: write a product's whole sale state at once (first load or rebuild).
--
-- KEYS[1..6] as purchase.lua (sale, free, buyers, orders, pending, tombstones)
-- KEYS[7] the product's rebuild lock
-- ARGV[1] mode: "init" (only if no sale state exists) or "rebuild" (replace; the caller
--         holds the product's rebuild lock and has read MongoDB after pausing the sale;
--         the sale stays paused until the caller has applied the product revisions
--         written since it read the product, and resumes it with pause.lua)
-- ARGV[2] the rebuild's fencing token (the lock's value from lock.lua; "" for init)
-- ARGV[3] stock_total  ARGV[4] next_unit  ARGV[5] one_per_user (0/1)
-- ARGV[6] starts_at_ms (0 = open)  ARGV[7] ends_at_ms (0 = never)
-- ARGV[8] the product revision the settings are from (configure.lua never goes back
--         to an earlier one)
-- ARGV[9] n_free, then n_free units
-- then n_buyers, then n_buyers pairs (user_id, live order count)
-- then n_orders, then n_orders pairs (order_id, record "user|unit|at|C")
-- then n_tombstones, then n_tombstones order ids
--
-- A deleted product's sale hash is a tombstone ({deleted = 1}, see unload.lua): no mode
-- writes over it, so a rebuild that read the product before its deletion cannot bring
-- the sale back.
--
-- Returns 1 if written, 0 if mode was "init" and a sale state (or a tombstone) already
-- existed or the product is deleted, -1 if
-- mode was "rebuild" and the caller no longer holds the lock (its lease ran out, or
-- Redis restarted and another rebuild took the stale lock over: its snapshot is the
-- newer one, and this one must not overwrite it).
if ARGV[1] == 'init' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[1] == 'rebuild' and redis.call('GET', KEYS[7]) ~= ARGV[2] then return -1 end
if redis.call('HGET', KEYS[1], 'deleted') == '1' then return 0 end
for i = 1, 6 do redis.call('DEL', KEYS[i]) end
local paused = '0'
if ARGV[1] == 'rebuild' then paused = '1' end
redis.call('HSET', KEYS[1], 'stock_total', ARGV[3], 'next_unit', ARGV[4],
  'one_per_user', ARGV[5], 'starts_at_ms', ARGV[6], 'ends_at_ms', ARGV[7], 'revision', ARGV[8],
  'paused', paused)
local i = 9
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('SADD', KEYS[6], ARGV[i]); i = i + 1 end
return 1
