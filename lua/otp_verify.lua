-- otp_verify.lua: check a submitted one-time code and consume it, in one atomic step, so
-- that of any number of concurrent submissions of the right code exactly one is verified.
--
-- KEYS[1] the user's code record, a hash (code_hash, salt, attempts, session,
--         created_at_ms; written by otp::issue with a TTL): the only key, so the script
--         runs on Redis Cluster as is (the key carries the tag {u:<user id>})
-- ARGV[1] the salt the caller hashed with (read from the record just before)
-- ARGV[2] salted SHA-256 of the submitted code (the code itself never reaches Redis)
-- ARGV[3] SHA-256 of the submitting session's id
-- ARGV[4] attempts allowed per code (at least 1)
--
-- Returns {"verified"} (the code and session match: the record is deleted, single use),
-- {"wrong", attempts_left} (a miss, counted; at 0 the record is deleted) or {"none"} (no
-- live code: never issued, expired, used, exhausted, or replaced since the caller read
-- its salt; nothing is counted). Comparisons are plain string equality: both sides are
-- salted hashes, so how long one takes tells nothing about the code.
--
-- Every read and check comes before the first write.
local max = tonumber(ARGV[4])
if not max or max < 1 then return redis.error_reply('ERR otp_verify: attempts allowed must be a number >= 1') end
local record = redis.call('HMGET', KEYS[1], 'code_hash', 'salt', 'attempts', 'session')
local stored_hash, salt, session = record[1], record[2], record[4]
local attempts = tonumber(record[3] or '0')
if not (stored_hash and salt and session and attempts) or attempts >= max then
  -- Missing, partial or already exhausted: nothing to verify against.
  redis.call('DEL', KEYS[1])
  return {'none'}
end
if salt ~= ARGV[1] then return {'none'} end
if stored_hash == ARGV[2] and session == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return {'verified'}
end
attempts = attempts + 1
if attempts >= max then
  redis.call('DEL', KEYS[1])
else
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
return {'wrong', max - attempts}
