-- Deletes a session. KEYS[1]: the session hash; ARGV[1]: the write's deadline.
local past = late(ARGV[1])
if past then return {'late', past} end
-- A tombstone left by a cycle is no session: nothing to delete.
if redis.call('HEXISTS', KEYS[1], 'd') == 0 then return {'deleted', '0'} end
return {'deleted', tostring(redis.call('DEL', KEYS[1]))}
