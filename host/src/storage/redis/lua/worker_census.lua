-- Whether one worker is live, and how many are: read only, on the server's
-- clock like every other liveness decision.
-- KEYS[1] liveness zset (worker id -> expiry ms)
-- ARGV[1] worker id
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
local live = 0
if expiry and tonumber(expiry) > now then live = 1 end
return { live, redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') }
