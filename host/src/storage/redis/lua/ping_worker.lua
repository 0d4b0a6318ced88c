-- Renews a live worker's liveness. Returns 1, or 0 for a worker that is
-- unknown or whose liveness lapsed (it is then removed).
-- KEYS[1] worker hash      KEYS[2] liveness zset
-- ARGV[1] worker id        ARGV[2] ttl in ms     ARGV[3] task-type set key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expiry = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not expiry or tonumber(expiry) <= now or redis.call('EXISTS', KEYS[1]) == 0 then
  local old = redis.call('HGET', KEYS[1], 'tasks')
  if old then
    for _, task in ipairs(cjson.decode(old)) do redis.call('SREM', ARGV[3] .. task, ARGV[1]) end
  end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
