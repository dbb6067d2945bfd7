-- Deletes a session. KEYS[1]: the session hash; ARGV[1]: the write's deadline.
local past = late(ARGV[1])
if past then return {'late', past} end
return {'deleted', tostring(redis.call('DEL', KEYS[1]))}
