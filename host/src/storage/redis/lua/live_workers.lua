-- Every live worker's record, in-flight count and outcomes, flattened.
-- KEYS[1] liveness zset
-- ARGV[1] worker hash key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local fields = redis.call('HMGET', ARGV[1] .. id, 'info', 'in_flight', 'outcomes')
  if fields[1] then
    out[#out + 1] = fields[1]
    out[#out + 1] = fields[2] or '0'
    out[#out + 1] = fields[3] or ''
  end
end
return out
