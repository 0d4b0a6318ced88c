-- Holds a cancel for a worker's next heartbeat.
-- KEYS[1] the worker's held cancels (set); ARGV[1] task id, ARGV[2] most
-- held, ARGV[3] lifetime in seconds (renewed by each new one).
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
