-- Counts one judged result into a worker's reputation window: a string of
-- '1' (succeeded) and '0', newest first, at most ARGV[2] long. Unknown
-- workers are left alone.
-- KEYS[1] worker hash      ARGV[1] '1' | '0'      ARGV[2] window
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local outcomes = ARGV[1] .. (redis.call('HGET', KEYS[1], 'outcomes') or '')
redis.call('HSET', KEYS[1], 'outcomes', string.sub(outcomes, 1, tonumber(ARGV[2])))
return 1
