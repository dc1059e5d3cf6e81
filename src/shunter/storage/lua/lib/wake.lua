-- Signal that a job can be claimed: idle workers block on BZPOPMIN of this one-member set,
-- and the member stays until one pops it, so a wake-up is never lost.
local function wake(k)
  redis.call('ZADD', k.marker, '0', '0')
end
