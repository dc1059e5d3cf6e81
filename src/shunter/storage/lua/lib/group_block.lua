-- include: gcra
-- Why a group with waiting jobs cannot start one now: 'paused', 'full' (at its
-- concurrency limit), or the unix ms it can (its rate limit, or parked by RateLimited);
-- nil when it can. The active set <prefix>ga:<group> holds the ids of its active jobs, so
-- a slot is freed by every way out of `active` (leave_active); a full group checks its
-- members against the active index, so an id whose job hash was deleted by hand while it
-- ran cannot hold a slot for ever (it left active when rescued, with no hash to name its
-- group).
local function group_block(k, group, g, now)
  if g.paused then return 'paused' end
  if g.conc then
    local slots = k.prefix .. 'ga:' .. group
    if redis.call('SCARD', slots) >= g.conc then
      local active = k.active or k.prefix .. 'active'
      for _, id in ipairs(redis.call('SMEMBERS', slots)) do
        if not redis.call('ZSCORE', active, id) then redis.call('SREM', slots, id) end
      end
      if redis.call('SCARD', slots) >= g.conc then return 'full' end
    end
  end
  local at = g.until_ or 0
  if g.interval then
    local n, next_at = gcra(g.tat, now, g.interval, g.burst, 1)
    if n == 0 and next_at > at then at = next_at end
  end
  if at > now then return at end
  return nil
end
