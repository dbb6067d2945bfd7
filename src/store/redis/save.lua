-- Applies an upstream's change to a session, atomically on the server.
-- KEYS[1]: the session hash {d = data JSON, sid, c = created ms, e = deadline ms, x = expiry s}
-- ARGV: now_ms, ttl_s, absolute_ttl_s (-1: none), max_bytes, expiry_s ('' : unchanged),
--       cycle ('1': delete and return the result for the new id), patch...
local h = redis.call('HMGET', KEYS[1], 'd', 'sid', 'c', 'e', 'x')
if not h[1] then return {'gone'} end
local now = tonumber(ARGV[1])
if tonumber(h[4]) <= now then
  redis.call('DEL', KEYS[1])
  return {'gone'}
end
local data = parse(h[1])
for i = 7, #ARGV do merge(data, parse(ARGV[i])) end
local x = h[5] or ''
if ARGV[5] ~= '' then x = ARGV[5] end
local out = serialize(data)
if out == '{}' then
  redis.call('DEL', KEYS[1])
  return {'emptied'}
end
if #out > tonumber(ARGV[4]) then return {'too_large', tostring(#out)} end
local life = tonumber(ARGV[2])
if x ~= '' and tonumber(x) > 0 then life = tonumber(x) end
local c = tonumber(h[3])
local e = now + life * 1000
local abs = tonumber(ARGV[3])
if abs >= 0 and c + abs * 1000 < e then e = c + abs * 1000 end
local es = string.format('%.0f', e)
if ARGV[6] == '1' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'd', out, 'e', es)
  if x ~= '' then redis.call('HSET', KEYS[1], 'x', x) end
  redis.call('PEXPIREAT', KEYS[1], es)
end
return {'saved', out, h[2], h[3], es, x}
