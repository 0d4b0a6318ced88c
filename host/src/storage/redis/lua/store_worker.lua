-- Registers a worker, or (refresh mode) updates a live one, keeping the
-- task-type index and the liveness index in step with its record.
-- Returns the worker's in-flight count; in refresh mode -1 when the worker
-- is unknown or its liveness lapsed (it is then removed), -2 when its record
-- changed since it was read (the caller reads again and retries).
-- KEYS[1] worker hash      KEYS[2] liveness zset (worker id -> expiry ms)
-- ARGV[1] worker id        ARGV[2] worker record (JSON)   ARGV[3] status
-- ARGV[4] ttl in ms        ARGV[5] task-type set key prefix
-- ARGV[6] mode: register | refresh
-- ARGV[7] refresh: the record revision the update was made from
-- ARGV[8..] supported task types
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local id = ARGV[1]
local old = redis.call('HGET', KEYS[1], 'tasks')
if ARGV[6] == 'refresh' then
  local expiry = redis.call('ZSCORE', KEYS[2], id)
  if not old or not expiry or tonumber(expiry) <= now then
    if old then
      for _, task in ipairs(cjson.decode(old)) do redis.call('SREM', ARGV[5] .. task, id) end
    end
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], id)
    return -1
  end
  if (redis.call('HGET', KEYS[1], 'rev') or '0') ~= ARGV[7] then
    return -2
  end
end
if old then
  for _, task in ipairs(cjson.decode(old)) do redis.call('SREM', ARGV[5] .. task, id) end
end
local tasks = {}
for i = 8, #ARGV do
  tasks[#tasks + 1] = ARGV[i]
  redis.call('SADD', ARGV[5] .. ARGV[i], id)
end
-- cjson encodes an empty table as an object; keep the field a JSON array.
local encoded = '[]'
if #tasks > 0 then encoded = cjson.encode(tasks) end
redis.call('HSET', KEYS[1], 'info', ARGV[2], 'status', ARGV[3], 'tasks', encoded)
redis.call('HSETNX', KEYS[1], 'in_flight', 0)
-- A record made anew (a first registration, or one after its worker was
-- purged) starts its revisions at the current time in ms, so a worker id's
-- revisions never repeat and readers may keep decoded records by revision.
if redis.call('HEXISTS', KEYS[1], 'rev') == 0 then
  redis.call('HSET', KEYS[1], 'rev', now)
end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), id)
return tonumber(redis.call('HGET', KEYS[1], 'in_flight'))
