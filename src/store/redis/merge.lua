-- Shared by the save script: JSON Merge Patch (RFC 7396) on JSON text.
-- Only objects are parsed, since a patch recurses into objects and replaces
-- everything else whole; strings, numbers and arrays stay as their raw text,
-- so nothing is lost to Lua's number or empty-table conversions.
-- Its functions are made when first asked for: a script defines its
-- functions each time it runs (about 6,800 instructions in Redis for these
-- seven, callgrind), and a save whose session is unchanged merges nothing.

local function json()
  local function skip_ws(s, i)
    local _, e = string.find(s, '^[ \t\r\n]*', i)
    return e + 1
  end

  local function scan_string(s, i)
    local j = i + 1
    while true do
      local k = string.find(s, '["\\]', j)
      if not k then error('sessiongate: unterminated JSON string') end
      if string.byte(s, k) == 92 then j = k + 2 else return k + 1 end
    end
  end

  local function scan_array(s, i)
    local depth, j = 0, i
    while true do
      local k = string.find(s, '[%[%]"]', j)
      if not k then error('sessiongate: unterminated JSON array') end
      local c = string.byte(s, k)
      if c == 34 then j = scan_string(s, k)
      elseif c == 91 then depth = depth + 1; j = k + 1
      else
        depth = depth - 1
        if depth == 0 then return k + 1 end
        j = k + 1
      end
    end
  end

  local parse_object

  local function scan_value(s, i)
    local c = string.sub(s, i, i)
    if c == '{' then return parse_object(s, i)
    elseif c == '"' then local e = scan_string(s, i); return string.sub(s, i, e - 1), e
    elseif c == '[' then local e = scan_array(s, i); return string.sub(s, i, e - 1), e
    else
      local _, e = string.find(s, '^[^,%]}%s]+', i)
      if not e then error('sessiongate: bad JSON value') end
      return string.sub(s, i, e), e + 1
    end
  end

  parse_object = function(s, i)
    local obj = {keys = {}, vals = {}}
    i = skip_ws(s, i + 1)
    if string.sub(s, i, i) == '}' then return obj, i + 1 end
    while true do
      local ke = scan_string(s, i)
      local key = string.sub(s, i, ke - 1)
      i = skip_ws(s, ke)
      if string.sub(s, i, i) ~= ':' then error('sessiongate: bad JSON object') end
      local v
      v, i = scan_value(s, skip_ws(s, i + 1))
      if obj.vals[key] == nil then obj.keys[#obj.keys + 1] = key end
      obj.vals[key] = v
      i = skip_ws(s, i)
      local c = string.sub(s, i, i)
      if c == ',' then i = skip_ws(s, i + 1)
      elseif c == '}' then return obj, i + 1
      else error('sessiongate: bad JSON object') end
    end
  end

  local function parse(s)
    local i = skip_ws(s, 1)
    if string.sub(s, i, i) ~= '{' then error('sessiongate: not a JSON object') end
    return (parse_object(s, i))
  end

  local function merge(target, patch)
    for _, k in ipairs(patch.keys) do
      local v = patch.vals[k]
      if v == 'null' then
        target.vals[k] = nil
      else
        if type(v) == 'table' then
          local t = target.vals[k]
          if type(t) ~= 'table' then t = {keys = {}, vals = {}} end
          merge(t, v)
          v = t
        end
        if target.vals[k] == nil then target.keys[#target.keys + 1] = k end
        target.vals[k] = v
      end
    end
  end

  local function serialize(obj)
    local parts, seen = {}, {}
    for _, k in ipairs(obj.keys) do
      local v = obj.vals[k]
      if v ~= nil and not seen[k] then
        seen[k] = true
        if type(v) == 'table' then v = serialize(v) end
        parts[#parts + 1] = k .. ':' .. v
      end
    end
    return '{' .. table.concat(parts, ',') .. '}'
  end

  return parse, merge, serialize
end
