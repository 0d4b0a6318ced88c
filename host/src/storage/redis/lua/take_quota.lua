-- Counts one use of a client's monthly quota if any is left. Returns 1 or 0.
-- KEYS[1] quota counter ({prefix}:quota:{client}:{period})
-- ARGV[1] limit            ARGV[2] counter lifetime in seconds
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
