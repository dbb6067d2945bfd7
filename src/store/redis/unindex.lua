-- Drops stale entries from a subject's index unless written again since
-- they were judged. KEYS[1]: the index (a sorted set scored by the time
-- each entry was written). ARGV[1]: the judgement's cut-off (ms); ARGV[2..]:
-- the entries. Returns the entries dropped.
local dropped = {}
for i = 2, #ARGV do
  local at = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if at and tonumber(at) < tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    dropped[#dropped + 1] = ARGV[i]
  end
end
return dropped
