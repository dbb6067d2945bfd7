-- The common write: stores the result sessiongate worked out from the
-- session it read (its patches merged, its deadline renewed), provided the
-- session still holds what was read. Nothing is parsed or computed here:
-- the session's data, created time and expiry are compared as text.
-- KEYS[1]: the session hash (see save.lua)
-- ARGV: now_ms, the write's deadline (ms, Redis's clock), then as read:
--       the data, created ms, expiry s ('': none); then the result:
--       expiry s to store ('': as read), deadline ms, data.
-- Answers 'changed' when the session no longer holds what was read: the
-- sender then sends the save script, which merges here. The deadline and
-- the save script's fast path cost Redis 92,500 instructions a write; the
-- numbers it read with tonumber (glibc's strtod, about 1,900 each) and
-- the fields it fetched and sent back (about 2,300 each) are what this
-- script leaves out (callgrind, bench/redis_script.py).
local past, clock = late(ARGV[2])
if past then return {'late', past} end
local h = redis.call('HMGET', KEYS[1], 'd', 'c', 'e', 'x', 'm')
if not h[1] then return {'gone'} end
if tonumber(h[3]) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return {'gone'}
end
-- A cycle moving this session elsewhere is under way (see save.lua).
if h[5] and tonumber(h[5]) > clock then return {'gone'} end
if h[1] ~= ARGV[3] or h[2] ~= ARGV[4] or (h[4] or '') ~= ARGV[5] then
  return {'changed'}
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'd', ARGV[8], 'e', ARGV[7], 'x', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'd', ARGV[8], 'e', ARGV[7])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
return {'saved'}
