-- Replaces a job if it is still at the expected version, then applies the
-- follow-up that must land with it. Returns 1 when applied, 0 when the job
-- changed meanwhile (nothing is written then).
-- KEYS[1] job hash
-- KEYS[2] follow-up target: job queue stream (enqueue), worker task zset
--         (push) or parked list (park); unused otherwise
-- KEYS[3] task sequence counter (push)
-- KEYS[4] worker hash (push)
-- KEYS[5] watch zset (job id -> task deadline in ms)
-- KEYS[6] hash of a worker whose in-flight count drops by one (release)
-- KEYS[7] job queue stream (acknowledgements)
-- ARGV[1] expected version         ARGV[2] encoded job (at version + 1)
-- ARGV[3] follow-up: none | enqueue | push | park
-- ARGV[4] job id (enqueue, park) or encoded task payload (push)
-- ARGV[5] task score: -priority (push)
-- ARGV[6] wake-up channel (push)   ARGV[7] worker id (push)
-- ARGV[8] retention in ms for a job that has ended; 0 keeps it
-- ARGV[9] deadline in ms of the task the job now waits on; empty when it waits on none
-- ARGV[10] job id
-- ARGV[11] '1' to release one of KEYS[6]'s in-flight slots
-- ARGV[12] consumer group   ARGV[13..] job queue entries to acknowledge and delete
--          (earlier steps' acknowledgements riding along; done whether or not
--          this update applies)
if #ARGV >= 13 then
  redis.call('XACK', KEYS[7], ARGV[12], unpack(ARGV, 13))
  redis.call('XDEL', KEYS[7], unpack(ARGV, 13))
end
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'd', ARGV[2])
if tonumber(ARGV[8]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[10])
else
  redis.call('ZREM', KEYS[5], ARGV[10])
end
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[6]) == 1 then
  if redis.call('HINCRBY', KEYS[6], 'in_flight', -1) < 0 then
    redis.call('HSET', KEYS[6], 'in_flight', 0)
  end
end
local kind = ARGV[3]
if kind == 'enqueue' then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[4])
elseif kind == 'park' then
  redis.call('RPUSH', KEYS[2], ARGV[4])
elseif kind == 'push' then
  -- Equal scores pop in member order: a zero-padded sequence number first
  -- keeps one priority first-in, first-out.
  local seq = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[2], ARGV[5], string.format('%020d', seq) .. ARGV[4])
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('HINCRBY', KEYS[4], 'in_flight', 1)
  end
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return 1
