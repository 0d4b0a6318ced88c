-- Deletes the records and index entries of workers whose liveness lapsed.
-- Returns their ids.
-- KEYS[1] liveness zset
-- ARGV[1] worker hash key prefix    ARGV[2] task-type set key prefix
-- ARGV[3] task queue key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do
  local old = redis.call('HGET', ARGV[1] .. id, 'tasks')
  if old then
    for _, task in ipairs(cjson.decode(old)) do redis.call('SREM', ARGV[2] .. task, id) end
  end
  redis.call('DEL', ARGV[1] .. id)
  -- A queue nobody will poll again is empty by now or abandoned; either way
  -- an empty one is just a key to drop.
  if redis.call('ZCARD', ARGV[3] .. id) == 0 then redis.call('DEL', ARGV[3] .. id) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return expired
