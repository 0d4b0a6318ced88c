-- Takes a task back off a worker's queue if no poll has taken it yet, and
-- gives back the in-flight slot its push counted (never below zero).
-- Returns 1 when the task was still queued (it is gone now), 0 otherwise.
-- Members are a 20-digit sequence number and the task's JSON, whose first
-- "task_id" is its own (serialised right after job_id, before any params).
-- KEYS[1] the worker's task zset   KEYS[2] the worker's hash
-- ARGV[1] task id (hyphenated)
local needle = '"task_id":"' .. ARGV[1] .. '"'
local batch = 256
local start = 0
while true do
  local members = redis.call('ZRANGE', KEYS[1], start, start + batch - 1)
  for _, member in ipairs(members) do
    local at = string.find(member, '"task_id":"', 21, true)
    if at and string.sub(member, at, at + #needle - 1) == needle then
      redis.call('ZREM', KEYS[1], member)
      if redis.call('EXISTS', KEYS[2]) == 1 then
        if redis.call('HINCRBY', KEYS[2], 'in_flight', -1) < 0 then
          redis.call('HSET', KEYS[2], 'in_flight', 0)
        end
      end
      return 1
    end
  end
  if #members < batch then
    return 0
  end
  start = start + batch
end
