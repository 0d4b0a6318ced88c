-- Deletes the records, index entries and task queues of workers whose
-- liveness lapsed. A queue nobody will poll again is abandoned: its tasks are
-- reported so the caller fails them over, and a worker restarting under the
-- same id never gets copies that were dispatched again meanwhile.
-- Returns, per purged worker: its id, the number n of tasks its queue held,
-- then n pairs (job id, task id).
-- Members are a 20-digit sequence number and the task's JSON, which starts
-- with "job_id" and then "task_id" (serialised before any params).
-- KEYS[1] liveness zset
-- ARGV[1] worker hash key prefix    ARGV[2] task-type set key prefix
-- ARGV[3] task queue key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(expired) do
  local old = redis.call('HGET', ARGV[1] .. id, 'tasks')
  if old then
    for _, task in ipairs(cjson.decode(old)) do redis.call('SREM', ARGV[2] .. task, id) end
  end
  redis.call('DEL', ARGV[1] .. id)
  local queued = redis.call('ZRANGE', ARGV[3] .. id, 0, -1)
  out[#out + 1] = id
  out[#out + 1] = tostring(#queued)
  for _, member in ipairs(queued) do
    -- Only the head holds the ids; params may be megabytes.
    local head = string.sub(member, 21, 160)
    out[#out + 1] = string.match(head, '"job_id":"([^"]*)"') or ''
    out[#out + 1] = string.match(head, '"task_id":"([^"]*)"') or ''
  end
  redis.call('DEL', ARGV[3] .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return out
