-- Applies an upstream's change to a session, atomically on the server.
-- KEYS[1]: the session hash {d = data JSON, sid, c = created ms, e = deadline ms,
--          x = expiry s, m = moving until ms (a cycle in progress, Cluster)}
-- KEYS[2]: with cycle 'move', the new id's hash (same server, so one step)
-- ARGV: now_ms, ttl_s, absolute_ttl_s (-1: none), max_bytes, expiry_s ('' : unchanged),
--       the write's deadline (ms, Redis's clock), the data the sender read
--       ('': not known) and its result with the patches applied;
--       cycle ('none' | 'move': write KEYS[2], delete KEYS[1] |
--              'mark': keep KEYS[1], marked as moving for ARGV[11] ms by the
--              cycle named by the new sid),
--       the new sid, mark ms,
--       with 'move': the new id, to leave in a tombstone under the old one
--       ('': no tombstone), the tombstone's lifetime (ms),
--       the subject key as JSON text ('': no check), n, the n JSON texts
--       the result's subject may have (n = 0: no subject), patch...
-- The common write (no cycle, no subject, the session read known) is
-- put.lua's; this script is sent when that one answers 'changed', and for
-- every other write.
local past, clock = late(ARGV[6])
if past then return {'late', past} end
local h = redis.call('HMGET', KEYS[1], 'd', 'sid', 'c', 'e', 'x', 'm')
if not h[1] then return {'gone'} end
local now = tonumber(ARGV[1])
if tonumber(h[4]) <= now then
  redis.call('DEL', KEYS[1])
  return {'gone'}
end
-- A cycle moving this session elsewhere is under way: this write loses the
-- race, as it would had the move finished first.
if h[6] and tonumber(h[6]) > clock then return {'gone'} end
local subject = ARGV[14] or ''
local data, out
if ARGV[7] ~= '' and subject == '' and h[1] == ARGV[7] then
  -- Unchanged since the sender read it: its merge of these same patches
  -- is this script's, without parsing the session in Lua.
  out = ARGV[8]
else
  local parse, merge, serialize = json()
  data = parse(h[1])
  for i = 16 + tonumber(ARGV[15]), #ARGV do merge(data, parse(ARGV[i])) end
  out = serialize(data)
end
local x = h[5] or ''
if ARGV[5] ~= '' then x = ARGV[5] end
-- The sender has the result it sent: it is not echoed back.
local echo = data and out or ''
if out == '{}' then
  redis.call('DEL', KEYS[1])
  return {'emptied'}
end
if #out > tonumber(ARGV[4]) then return {'too_large', tostring(#out)} end
-- The result's subject must be the one its new id was indexed under.
if subject ~= '' then
  local n = tonumber(ARGV[15])
  local v = data.vals[subject]
  local c = type(v) == 'string' and string.sub(v, 1, 1) or ''
  local is_subject = c == '"' or c == '-' or string.find(c, '%d') ~= nil
  local ok = not is_subject and n == 0
  if is_subject then
    for i = 16, 15 + n do
      if v == ARGV[i] then ok = true end
    end
  end
  if not ok then return {'reindex', is_subject and v or ''} end
end
local life = tonumber(ARGV[2])
if x ~= '' and tonumber(x) > 0 then life = tonumber(x) end
local c = tonumber(h[3])
local e = now + life * 1000
local abs = tonumber(ARGV[3])
if abs >= 0 and c + abs * 1000 < e then e = c + abs * 1000 end
local es = string.format('%d', e)
-- The saved record in one string: sid, created, deadline, expiry, then the
-- data echoed back. None of the four fields holds a NUL and the data comes
-- last, so the first four NULs split it. One reply element instead of
-- five: each element cost the proxy's client about 800 instructions
-- (callgrind) to parse. `tail` is all but the sid, joined with `..`: a
-- closure and `table.concat` of a new table cost Redis 4,600 more a save.
local tail = '\0' .. h[3] .. '\0' .. es .. '\0' .. x .. '\0' .. echo
local cycle = ARGV[9] or 'none'
if cycle == 'move' then
  -- The new session first: if Redis refuses the write (out of memory),
  -- nothing has changed and the old session stays.
  if x ~= '' then
    redis.call('HSET', KEYS[2], 'd', out, 'sid', ARGV[10], 'c', h[3], 'e', es, 'x', x)
  else
    redis.call('HSET', KEYS[2], 'd', out, 'sid', ARGV[10], 'c', h[3], 'e', es)
  end
  redis.call('PEXPIREAT', KEYS[2], es)
  redis.call('DEL', KEYS[1])
  -- A revocation that read the old id a moment ago follows the tombstone
  -- to the new one (it is no session: it has no data).
  if ARGV[12] ~= '' then
    redis.call('HSET', KEYS[1], 'mv', ARGV[12])
    redis.call('PEXPIRE', KEYS[1], ARGV[13])
  end
  return {'saved', ARGV[10] .. tail}
elseif cycle == 'mark' then
  -- Read-only until the move ends, and gone by itself when the mark ends
  -- should the move never finish; a failed move restores the deadline.
  local until_ms = clock + tonumber(ARGV[11])
  -- 'mt' names the cycle (its new sid): only it may finish or release the move.
  redis.call('HSET', KEYS[1], 'm', string.format('%d', until_ms), 'mt', ARGV[10])
  if until_ms < tonumber(h[4]) then
    redis.call('PEXPIREAT', KEYS[1], string.format('%d', until_ms))
  end
  return {'saved', h[2] .. tail}
end
if x ~= '' then
  redis.call('HSET', KEYS[1], 'd', out, 'e', es, 'x', x)
else
  redis.call('HSET', KEYS[1], 'd', out, 'e', es)
end
redis.call('PEXPIREAT', KEYS[1], es)
return {'saved', h[2] .. tail}
