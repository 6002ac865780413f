-- pause.lua: pause a product's sale (purchases answer "paused") before a rebuild, or
-- resume it once the rebuild has loaded it and applied every later product revision.
--
-- KEYS[1] sale hash  KEYS[2] the product's rebuild lock
-- ARGV[1] the rebuild's fencing token (the lock's value from lock.lua)
-- ARGV[2] "resume" to resume (absent: pause)
--
-- Returns 1 if paused (resumed), 0 if no sale state exists (to resume: no loaded sale;
-- a sale not loaded pauses purchases just the same), -1 if the caller no longer holds
-- the lock (a rebuild that took it over must not be paused or resumed by this one).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if ARGV[2] == 'resume' then
  if not redis.call('HGET', KEYS[1], 'stock_total') then return 0 end
  redis.call('HSET', KEYS[1], 'paused', '0')
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'paused', '1')
return 1
