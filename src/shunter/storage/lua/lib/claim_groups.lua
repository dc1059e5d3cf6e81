-- include: take_job, group_state, group_block, group_place, gcra, num_text
-- Take up to `count` jobs through the ring of groups: weighted fair queueing by start time
-- (start-time fair queueing). Every group that can start a job now is in the ring
-- <prefix>gring, scored by its virtual start tag S; the jobs without a group are the
-- member ''. Each dispatch pops the group with the smallest S, sets the virtual time to
-- it, starts the head of the group's line (priority, then FIFO) and puts the group back
-- at S + 1 / weight while it can start another. A group that enters the ring starts at
-- the virtual time (group_place), so a newly active group's first job starts within
-- (active groups - 1) dispatches, and weights give proportional shares.
--
-- Limits are kept out of the ring, not checked in it: a group at its concurrency limit
-- leaves the ring until a slot frees (leave_active), one over its rate (or parked by
-- RateLimited) waits in <prefix>gwake, scored by the time it can start again, and the due
-- ones come back at the start of each claim. So a job over a limit is never claimed (no
-- attempt, no event), and the cost of a claim does not grow with the backlog or with the
-- number of blocked groups: O(count · log groups), plus a bounded number of ring entries
-- made stale by a change of limits, re-checked and dropped.
-- `c` is the batch (see take_job); returns the number of jobs started.
local function claim_groups(k, c, count)
  local p = k.prefix
  local ring, wakes = p .. 'gring', p .. 'gwake'
  for _, group in ipairs(redis.call('ZRANGEBYSCORE', wakes, '-inf', c.now, 'LIMIT', 0, 100)) do
    group_place(k, group)
  end
  local started, stale = 0, 0
  while started < count and stale < 100 do
    local top = redis.call('ZPOPMIN', ring)
    if #top == 0 then break end
    local group, s = top[1], tonumber(top[2])
    k.vtime = s
    if group == '' then
      local head = redis.call('ZPOPMIN', k.waiting)
      if #head == 0 then
        stale = stale + 1
      else
        if take_job(k, c, head[1], head[2]) then started = started + 1 end
        if redis.call('ZCARD', k.waiting) > 0 then
          redis.call('ZADD', ring, num_text(s + 1), '')
        end
      end
    else
      local g = group_state(k, group)
      local gh = p .. 'gh:' .. group
      local block = group_block(k, group, g, c.now)
      local head = block == nil and redis.call('ZPOPMIN', p .. 'gw:' .. group) or {}
      if #head == 0 then
        -- its limits changed since it entered the ring, or its line was emptied
        stale = stale + 1
        group_place(k, group, g, block)
      else
        k.gwaiting = (k.gwaiting or 0) - 1
        local id = head[1]
        local next_s = s + 1 / g.weight
        if take_job(k, c, id, head[2]) then
          started = started + 1
          redis.call('SADD', p .. 'ga:' .. group, id)
          if g.interval then
            -- group_block allowed this start, so gcra allows one: it moves tat on
            local _, base = gcra(g.tat, c.now, g.interval, g.burst, 1)
            g.tat = base + g.interval
            redis.call('HSET', gh, 'tat', num_text(g.tat))
          end
        end
        if redis.call('ZCARD', p .. 'gw:' .. group) > 0 then
          local blocked = group_block(k, group, g, c.now)
          if blocked == nil then
            redis.call('ZADD', ring, num_text(next_s), group)
          else
            -- blocked with jobs waiting: keep its tag for when it comes back
            redis.call('HSET', gh, 'vs', num_text(next_s))
            g.vs = next_s
            group_place(k, group, g, blocked)
          end
        end
      end
    end
  end
  return started
end
