-- The live workers taking one task type, flattened as id, status, in_flight.
-- Workers whose liveness lapsed are dropped from the type's index on the way.
-- KEYS[1] task-type set    KEYS[2] liveness zset
-- ARGV[1] worker hash key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local expiry = redis.call('ZSCORE', KEYS[2], id)
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
