-- Records one parallel branch's result unless it has one already or the
-- fan-out was closed (close_fan_out leaves only the field "closed", which no
-- task id can be).
-- Returns how many branches have a result now, -1 for a duplicate, -2 when
-- the fan-out is closed.
-- KEYS[1] the fan-out's result hash (task id -> result JSON)
-- ARGV[1] task id           ARGV[2] result JSON       ARGV[3] lifetime in seconds
if redis.call('HEXISTS', KEYS[1], 'closed') == 1 then
  return -2
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return -1
end
-- An abandoned fan-out's results go eventually; each answer renews them.
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HLEN', KEYS[1])
