-- A worker's progress report, beside the job's record in the job's hash.
-- KEYS[1] job hash; ARGV[1] field, ARGV[2] report (JSON).
-- Returns 1 when kept, 0 when the job does not exist (nothing is created).
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
