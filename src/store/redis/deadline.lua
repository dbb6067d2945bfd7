-- Shared by every write script: Redis's own clock in milliseconds, and the
-- refusal of a write that runs after the deadline its sender gave it. A
-- stalled server runs its queued scripts when it recovers; by then the
-- sender has told its client the write failed, so the write must not happen.
-- Reading TIME before a write needs effects replication: the default
-- since Redis 5, asked for explicitly for the servers that still need it.
redis.replicate_commands()

local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Milliseconds are written with '%d' (a C long): the same digits as
-- '%.0f' for them, without glibc's float formatting (about 2,500
-- instructions less a call in Redis, callgrind).
local function late(deadline_ms)
  local now = clock_ms()
  if now > tonumber(deadline_ms) then return string.format('%d', now) end
  return nil, now
end
