-- The live workers taking one task type, flattened as id, record revision,
-- in_flight, outcomes: the caller keeps decoded records by revision and
-- fetches only those it does not have (decoding every record on every
-- dispatch cost more than the rest of the dispatch).
-- Workers whose liveness lapsed are dropped from the type's index on the way.
-- KEYS[1] task-type set    KEYS[2] liveness zset
-- ARGV[1] worker hash key prefix
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids == 0 then
  return {}
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- One ZMSCORE per CHUNK ids instead of one ZSCORE each. Not one for all:
-- unpack() fails past Lua's stack limit (about 8,000 values), which would
-- stop every dispatch of the type.
local CHUNK = 1000
local expiries = {}
for first = 1, #ids, CHUNK do
  local last = math.min(first + CHUNK - 1, #ids)
  local scores = redis.call('ZMSCORE', KEYS[2], unpack(ids, first, last))
  for i = 1, last - first + 1 do
    expiries[first + i - 1] = scores[i]
  end
end
local out = {}
for i, id in ipairs(ids) do
  local expiry = expiries[i]
  if expiry and tonumber(expiry) > now then
    local fields = redis.call('HMGET', ARGV[1] .. id, 'rev', 'in_flight', 'outcomes')
    if fields[1] then
      out[#out + 1] = id
      out[#out + 1] = fields[1]
      out[#out + 1] = fields[2] or '0'
      out[#out + 1] = fields[3] or ''
    end
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
