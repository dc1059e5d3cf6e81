-- Signal that a job can be claimed: idle workers block on BZPOPMIN of this one-member set,
-- and the member stays until one pops it, so a wake-up is never lost.
-- The key is k.marker, or built from the prefix (scripts that end an attempt without
-- declaring it wake idle workers of a queue with a concurrency limit, see leave_active).
local function wake(k)
  redis.call('ZADD', k.marker or k.prefix .. 'marker', '0', '0')
end
