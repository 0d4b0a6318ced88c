-- Stores a new job and queues it for the executors, in one step.
-- KEYS[1] job hash          ({prefix}:job:{id})
-- KEYS[2] job queue stream  ({prefix}:jobs)
-- ARGV[1] job version       ARGV[2] encoded job       ARGV[3] job id
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'job', ARGV[3])
return 1
