-- idempotency_begin.lua: claim an idempotency record for one request, or report why not.
--
-- KEYS[1] record hash (fp, state = in_flight | done | open, lease_until_ms, status, body)
-- ARGV[1] request fingerprint  ARGV[2] now_ms  ARGV[3] lease_ms  ARGV[4] ttl_ms
--
-- Returns {"started"} (this request now holds the record), {"mismatch"} (the key was
-- used for a different request), {"in_flight"} (another holder's lease is live) or
-- {"done", status, body, pttl} (the stored answer to replay, and the record's remaining
-- life in ms, so a copy of the answer is never kept longer than the record).
local now = tonumber(ARGV[2])
local record = redis.call('HMGET', KEYS[1], 'fp', 'state', 'lease_until_ms', 'status', 'body')
if record[1] and record[1] ~= ARGV[1] then return {'mismatch'} end
if record[2] == 'done' then return {'done', record[4], record[5], redis.call('PTTL', KEYS[1])} end
if record[2] == 'in_flight' and tonumber(record[3] or '0') > now then return {'in_flight'} end
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'in_flight',
  'lease_until_ms', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'started'}
