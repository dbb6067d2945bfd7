-- Stores a new session with Redis's own expiry.
-- KEYS[1]: the session hash; ARGV: data JSON, sid, created ms, deadline ms,
-- expiry s ('' : none), the write's deadline (ms, Redis's clock)
local past = late(ARGV[6])
if past then return {'late', past} end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'sid', ARGV[2], 'c', ARGV[3], 'e', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'x', ARGV[5]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return {'created'}
