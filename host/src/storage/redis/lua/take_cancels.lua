-- Takes the held cancels among the tasks a worker says it runs.
-- KEYS[1] the worker's held cancels (set); ARGV task ids.
-- Returns the ids that were held; they are removed.
local taken = {}
for _, task in ipairs(ARGV) do
    if redis.call('SREM', KEYS[1], task) == 1 then
        taken[#taken + 1] = task
    end
end
return taken
