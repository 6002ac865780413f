-- idempotency_finish.lua: end a request that holds an idempotency record.
--
-- KEYS[1] record hash
-- ARGV[1] request fingerprint  ARGV[2] state: "done" (store the answer for replay) or
--         "open" (no answer stored: a retry evaluates again, the key stays bound to
--         this request)  ARGV[3] status  ARGV[4] body  ARGV[5] ttl_ms
--
-- Returns 1 if written, 0 if the record belongs to another request.
local fp = redis.call('HGET', KEYS[1], 'fp')
if fp and fp ~= ARGV[1] then return 0 end
if ARGV[2] == 'done' then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'done', 'status', ARGV[3], 'body', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'open', 'lease_until_ms', '0')
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
