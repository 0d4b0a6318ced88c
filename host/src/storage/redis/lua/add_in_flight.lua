-- Adjusts a worker's in-flight count, never below zero; unknown workers are left alone.
-- KEYS[1] worker hash      ARGV[1] delta
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local n = redis.call('HINCRBY', KEYS[1], 'in_flight', ARGV[1])
if n < 0 then
  redis.call('HSET', KEYS[1], 'in_flight', 0)
end
return 1
