-- Counts one use of a client's monthly quota if any is left. Returns 1 or 0.
-- Periods ("YYYY-MM") order as text: a later one restarts the count, and a
-- request still carrying an earlier one (it straddled the month boundary)
-- counts against the current period rather than resetting it.
-- KEYS[1] the client's quota hash ({prefix}:quota:{client}): period, used
-- ARGV[1] period           ARGV[2] limit            ARGV[3] lifetime in seconds
local period = redis.call('HGET', KEYS[1], 'period')
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
if not period or ARGV[1] > period then
  redis.call('HSET', KEYS[1], 'period', ARGV[1], 'used', 0)
  used = 0
end
if used >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'used', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
