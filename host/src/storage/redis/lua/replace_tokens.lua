-- Swaps the whole set of individual worker token digests at once.
-- KEYS[1] worker id -> digest hash    KEYS[2] digest -> worker id hash
-- ARGV pairs: worker id, hex digest
redis.call('DEL', KEYS[1], KEYS[2])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i])
end
return 1
