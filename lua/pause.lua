-- pause.lua: pause a product's sale (purchases answer "paused") before a rebuild.
--
-- KEYS[1] sale hash
--
-- Returns 1 if paused, 0 if no sale state exists (it is then not loaded, which pauses
-- purchases just the same).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'paused', '1')
return 1
