-- Records one parallel branch's result unless it has one already.
-- Returns how many branches have a result now, or -1 for a duplicate.
-- KEYS[1] the fan-out's result hash (task id -> result JSON)
-- ARGV[1] task id           ARGV[2] result JSON       ARGV[3] lifetime in seconds
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return -1
end
-- An abandoned fan-out's results go eventually; each answer renews them.
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HLEN', KEYS[1])
