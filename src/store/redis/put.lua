-- The common write: stores the result sessiongate worked out from the
-- session it read (its patches merged, its deadline renewed), provided the
-- session still holds what was read. Nothing is parsed or computed here:
-- the session's data, created time and expiry are compared as text.
-- Several writes go in one call (the writes queued while the previous call
-- was in flight): a call's fixed cost (EVALSHA and its arguments, the
-- clock) is about 31,000 instructions, a write's own about 49,000.
-- KEYS[i]: the session hash of the i-th write (see save.lua)
-- ARGV, 8 per write: now_ms, the write's deadline (ms, Redis's clock), then
--       as read: the data, created ms, expiry s ('': none); then the
--       result: expiry s to store ('': as read), deadline ms, data.
-- Answers per write: 'saved'; 'gone'; 'late <Redis's clock>' (past its
-- deadline); 'wrongtype'; or 'changed' when the session no longer holds what was read:
-- the sender then sends the save script, which merges here.
local clock = clock_ms()
local out = {}
for i = 1, #KEYS do
  local a, k = (i - 1) * 8, KEYS[i]
  local r = 'saved'
  if clock > tonumber(ARGV[a + 2]) then
    r = 'late ' .. string.format('%d', clock)
  else
    -- Nothing here may raise an error: it would fail the writes of the
    -- whole call, some of them already made. A key of another type
    -- answers for its write alone; an unreadable deadline is no session.
    local h = redis.pcall('HMGET', k, 'd', 'c', 'e', 'x', 'm')
    if h.err then
      r = 'wrongtype'
    elseif not h[1] or (tonumber(h[3]) or 0) <= tonumber(ARGV[a + 1]) then
      -- Expired by the sender's clock (or unreadable): it goes now.
      if h[1] then redis.call('DEL', k) end
      r = 'gone'
    -- A cycle moving this session elsewhere is under way (see save.lua).
    elseif h[5] and (tonumber(h[5]) or 0) > clock then
      r = 'gone'
    elseif h[1] ~= ARGV[a + 3] or h[2] ~= ARGV[a + 4] or (h[4] or '') ~= ARGV[a + 5] then
      r = 'changed'
    elseif ARGV[a + 6] ~= '' then
      redis.call('HSET', k, 'd', ARGV[a + 8], 'e', ARGV[a + 7], 'x', ARGV[a + 6])
      redis.call('PEXPIREAT', k, ARGV[a + 7])
    else
      redis.call('HSET', k, 'd', ARGV[a + 8], 'e', ARGV[a + 7])
      redis.call('PEXPIREAT', k, ARGV[a + 7])
    end
  end
  out[i] = r
end
return out
