-- The live workers taking one task type, flattened as id, status, in_flight.
-- Workers whose liveness lapsed are dropped from the type's index on the way.
-- KEYS[1] task-type set    KEYS[2] liveness zset
-- ARGV[1] worker hash key prefix
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids == 0 then
  return {}
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- One ZMSCORE for every expiry instead of one ZSCORE each.
local expiries = redis.call('ZMSCORE', KEYS[2], unpack(ids))
local out = {}
for i, id in ipairs(ids) do
  local expiry = expiries[i]
  if expiry and tonumber(expiry) > now then
    local fields = redis.call('HMGET', ARGV[1] .. id, 'status', 'in_flight')
    out[#out + 1] = id
    out[#out + 1] = fields[1] or 'idle'
    out[#out + 1] = fields[2] or '0'
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
