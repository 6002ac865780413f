-- unlock.lua: release a lock only if this holder still owns it.
--
-- KEYS[1] the lock  ARGV[1] the holder's token
--
-- Returns 1 if released, 0 if the lock was gone or held by someone else.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
