-- One page of an index of jobs (a status or a client zset), highest score
-- first, skipping entries whose job is gone (they are removed on the way).
-- Returns job ids (mode 'ids') or encoded jobs (mode 'jobs').
-- KEYS[1] the index zset
-- ARGV[1] job hash key prefix       ARGV[2] offset          ARGV[3] limit
-- ARGV[4] mode: ids | jobs
-- ARGV[5] cutoff score: entries below it are dropped first (an index of
--         ended jobs, whose retention lapsed); empty for none
if ARGV[5] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])
end
local skip = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local out = {}
local gone = {}
local batch = 128
local start = 0
while #out < limit do
  local ids = redis.call('ZREVRANGE', KEYS[1], start, start + batch - 1)
  for _, id in ipairs(ids) do
    if #out >= limit then break end
    local key = ARGV[1] .. id
    if skip > 0 then
      if redis.call('EXISTS', key) == 1 then
        skip = skip - 1
      else
        gone[#gone + 1] = id
      end
    elseif ARGV[4] == 'jobs' then
      local data = redis.call('HGET', key, 'd')
      if data then out[#out + 1] = data else gone[#gone + 1] = id end
    elseif redis.call('EXISTS', key) == 1 then
      out[#out + 1] = id
    else
      gone[#gone + 1] = id
    end
  end
  if #ids < batch then break end
  start = start + batch
end
for i = 1, #gone, 1000 do
  redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(i + 999, #gone)))
end
return out
