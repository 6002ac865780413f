-- lock.lua: take a lock with a lease, tagged with the run_id of this Redis.
--
-- KEYS[1] the lock  ARGV[1] the holder's token  ARGV[2] lease in ms
--
-- A lock written by an earlier run of this Redis (restored from its RDB or AOF after
-- a restart) is stale: its holder worked against a state this Redis no longer has,
-- and waiting out its lease would keep a sale paused for nothing. It is taken over;
-- a holder still running is fenced off by the scripts that check the lock's value.
--
-- Returns the lock's value ("run_id:token", the fencing token) if this holder now owns
-- it, false (nil) if a holder of this run of Redis does.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #run_id + 1) == run_id .. ':' then return false end
local value = run_id .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
