-- Revokes a session if its subject is still the one the index named.
-- KEYS[1]: the session hash. ARGV: the write's deadline, now_ms, the subject
-- key as JSON text, then every JSON text the subject's value may have.
local past = late(ARGV[1])
if past then return {'late', past} end
local h = redis.call('HMGET', KEYS[1], 'd', 'e', 'mv')
-- Cycled meanwhile: the revocation follows the session to its new id.
if not h[1] and h[3] then return {'moved', h[3]} end
if not h[1] or tonumber(h[2]) <= tonumber(ARGV[2]) then return {'gone'} end
local parse = json()
local v = parse(h[1]).vals[ARGV[3]]
if type(v) == 'string' then
  for i = 4, #ARGV do
    if v == ARGV[i] then
      redis.call('DEL', KEYS[1])
      return {'deleted'}
    end
  end
end
return {'other'}
