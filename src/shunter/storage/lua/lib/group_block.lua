-- include: gcra
-- Why a group with waiting jobs cannot start one now: 'paused', 'full' (at its
-- concurrency limit), or the unix ms it can (its rate limit, or parked by RateLimited);
-- nil when it can. The active set <prefix>ga:<group> holds the ids of its active jobs, so
-- a slot is freed by every way out of `active` (leave_active). One case escapes that: a
-- job hash deleted by hand while the job ran leaves active when rescued with no hash to
-- name its group. So a full group checks a few of its members (SRANDMEMBER, O(1) however
-- high its limit) against the active index and drops the ones that are not there: such a
-- slot is found again within a few claims instead of being held for ever.
local function group_block(k, group, g, now)
  if g.paused then return 'paused' end
  if g.conc then
    local slots = k.prefix .. 'ga:' .. group
    if redis.call('SCARD', slots) >= g.conc then
      local active = k.active or k.prefix .. 'active'
      local healed = false
      for _, id in ipairs(redis.call('SRANDMEMBER', slots, 3)) do
        if not redis.call('ZSCORE', active, id) then
          redis.call('SREM', slots, id)
          healed = true
        end
      end
      if not healed or redis.call('SCARD', slots) >= g.conc then return 'full' end
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
