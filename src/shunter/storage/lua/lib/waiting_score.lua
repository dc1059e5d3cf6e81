-- Waiting order: higher priority first, FIFO within a priority (priority in [-1000, 1000];
-- 2^40 sequence numbers per band keeps every score exact in a double).
local function waiting_score(k, priority)
  local seq = redis.call('HINCRBY', k.meta, 'seq', 1)
  return (1000 - priority) * 1099511627776 + seq
end
