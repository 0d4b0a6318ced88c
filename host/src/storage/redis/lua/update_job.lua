-- Replaces a job if it is still at the expected version, then applies the
-- follow-up that must land with it and keeps the job's indexes current.
-- Returns 1 when applied, 0 when the job changed meanwhile (nothing is
-- written then).
-- KEYS[1] job hash: v (version), d (encoded job), s (status)
-- KEYS[2] job queue stream (enqueue, parent wake-up, acknowledgements)
-- KEYS[3] task sequence counter (push)
-- KEYS[4] watch zset (job id -> task deadline in ms)
-- KEYS[5] hash of a worker whose in-flight count drops by one (release)
-- KEYS[6] status zset of the job's new status (job id -> updated_at in µs)
-- KEYS[7 .. 6+2P] per pushed task: the worker's task zset, the worker's hash
-- KEYS[7+2P .. 6+2P+K] per distinct parked task type: its parked list
-- ARGV[1] expected version         ARGV[2] encoded job (at version + 1)
-- ARGV[3] retention in ms for a job that has ended; 0 keeps it
-- ARGV[4] deadline in ms of the task the job now waits on; empty when it waits on none
-- ARGV[5] job id
-- ARGV[6] '1' to release one of KEYS[5]'s in-flight slots; '1+' / '1-' also
--         count a success / a failure into its reputation window (the last
--         50 outcomes, REPUTATION_WINDOW in storage/workers.rs)
-- ARGV[7] consumer group           ARGV[8] '1' to queue the job for the executors
-- ARGV[9] new status               ARGV[10] status zset key prefix (+ status)
-- ARGV[11] status score: updated_at in µs
-- ARGV[12] cutoff score: entries below it leave KEYS[6] (an ended status whose
--          retention lapsed for them; now and then); empty for none
-- ARGV[13] parent job id to queue when the job ends now; empty for none
-- ARGV[14] wake-up channel (push)
-- ARGV[15] ended-jobs zset: job id .. client index key -> ended at, in µs
-- ARGV[16] the job's client index key (jobs by client, scored by creation)
-- ARGV[17] P, tasks pushed         ARGV[18] K, task types parked
-- ARGV[19 .. 18+3P] per pushed task: score (-priority), encoded payload, worker id
-- ARGV[19+3P ..] job queue entries to acknowledge and delete (earlier steps'
--          acknowledgements riding along; done whether or not this update applies)
-- The ended statuses (JobStatus::is_terminal).
local ENDED = { finished = true, failed = true, cancelled = true, error = true, quarantined = true }
local pushes = tonumber(ARGV[17])
local parks = tonumber(ARGV[18])
local acks = 19 + 3 * pushes
if #ARGV >= acks then
  redis.call('XACK', KEYS[2], ARGV[7], unpack(ARGV, acks))
  redis.call('XDEL', KEYS[2], unpack(ARGV, acks))
end
local current = redis.call('HMGET', KEYS[1], 'v', 's')
if current[1] ~= ARGV[1] then
  return 0
end
local old_status = current[2]
local status = ARGV[9]
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'd', ARGV[2], 's', status)
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif old_status and ENDED[old_status] then
  -- An ended job an operator revived (a retry): it keeps no expiry and
  -- leaves the ended-jobs zset, whose prune would take it out of its index.
  redis.call('PERSIST', KEYS[1])
  redis.call('ZREM', ARGV[15], ARGV[5] .. ARGV[16])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
else
  redis.call('ZREM', KEYS[4], ARGV[5])
end
-- Status index: the job leaves its old status's set for its new one.
if old_status and old_status ~= status then
  redis.call('ZREM', ARGV[10] .. old_status, ARGV[5])
end
redis.call('ZADD', KEYS[6], ARGV[11], ARGV[5])
-- A client's index is scored by creation, which says nothing of when its
-- entries lapse: the ended-jobs zset remembers, by end time, which index
-- holds each ended job, so the prune below can take it out of there too.
if tonumber(ARGV[3]) > 0 and old_status ~= status then
  redis.call('ZADD', ARGV[15], ARGV[11], ARGV[5] .. ARGV[16])
end
if ARGV[12] ~= '' then
  -- Ended jobs expire by PEXPIRE; their index entries go by score.
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[12])
  -- At most 256 per prune, well above the endings between two prunes.
  local lapsed = redis.call('ZRANGEBYSCORE', ARGV[15], '-inf', '(' .. ARGV[12], 'LIMIT', 0, 256)
  for _, member in ipairs(lapsed) do
    -- Job ids are UUIDs: 36 characters, then the index key.
    redis.call('ZREM', string.sub(member, 37), string.sub(member, 1, 36))
  end
  if #lapsed > 0 then
    redis.call('ZREM', ARGV[15], unpack(lapsed))
  end
end
if ARGV[13] ~= '' and old_status ~= status then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[13])
end
if string.sub(ARGV[6], 1, 1) == '1' and redis.call('EXISTS', KEYS[5]) == 1 then
  if redis.call('HINCRBY', KEYS[5], 'in_flight', -1) < 0 then
    redis.call('HSET', KEYS[5], 'in_flight', 0)
  end
  local verdict = string.sub(ARGV[6], 2, 2)
  if verdict ~= '' then
    local outcome = (verdict == '+') and '1' or '0'
    local outcomes = outcome .. (redis.call('HGET', KEYS[5], 'outcomes') or '')
    redis.call('HSET', KEYS[5], 'outcomes', string.sub(outcomes, 1, 50))
  end
end
if ARGV[8] == '1' then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[5])
end
for i = 0, pushes - 1 do
  local tasks, worker = KEYS[7 + 2 * i], KEYS[8 + 2 * i]
  local score, payload, worker_id = ARGV[19 + 3 * i], ARGV[20 + 3 * i], ARGV[21 + 3 * i]
  -- Equal scores pop in member order: a zero-padded sequence number first
  -- keeps one priority first-in, first-out.
  local seq = redis.call('INCR', KEYS[3])
  redis.call('ZADD', tasks, score, string.format('%020d', seq) .. payload)
  if redis.call('EXISTS', worker) == 1 then
    redis.call('HINCRBY', worker, 'in_flight', 1)
  end
  redis.call('PUBLISH', ARGV[14], worker_id)
end
for i = 1, parks do
  redis.call('RPUSH', KEYS[6 + 2 * pushes + i], ARGV[5])
end
return 1
