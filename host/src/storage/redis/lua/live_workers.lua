-- Every live worker's record and in-flight count, flattened; removes the
-- records of workers whose liveness lapsed (the index cleanup).
-- KEYS[1] liveness zset
-- ARGV[1] worker hash key prefix    ARGV[2] task-type set key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local old = redis.call('HGET', ARGV[1] .. id, 'tasks')
  if old then
    for _, task in ipairs(cjson.decode(old)) do redis.call('SREM', ARGV[2] .. task, id) end
  end
  redis.call('DEL', ARGV[1] .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local fields = redis.call('HMGET', ARGV[1] .. id, 'info', 'in_flight')
  if fields[1] then
    out[#out + 1] = fields[1]
    out[#out + 1] = fields[2] or '0'
  end
end
return out
