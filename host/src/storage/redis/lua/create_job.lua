-- Stores a new job, indexes it by status and by client, and queues it for
-- the executors, in one step.
-- KEYS[1] job hash          ({prefix}:job:{id})
-- KEYS[2] job queue stream  ({prefix}:jobs)
-- KEYS[3] status zset of the job's status (job id -> updated_at in µs)
-- KEYS[4] the client's job zset (job id -> created_at in µs)
-- ARGV[1] job version       ARGV[2] encoded job       ARGV[3] job id
-- ARGV[4] status            ARGV[5] updated_at in µs  ARGV[6] created_at in µs
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 's', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'job', ARGV[3])
return 1
