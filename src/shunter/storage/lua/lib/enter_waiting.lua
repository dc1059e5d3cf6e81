-- include: waiting_score, wake, emit, group_place, queue_meta, queue_flow, num_text
-- Put a job in line: state `waiting` with the hash fields that follow `event` (one HSET),
-- an entry in its line, a wake-up for an idle worker, and the move's event. `place` is the
-- score to queue at, or nil for the back of the line of its `priority`. release and rescue
-- pass the place the job was claimed from (stored by claim as `place`): it was already
-- under way, so it goes back to the head of the line. Queued behind the whole backlog
-- instead, an orphan waited for the backlog to drain, not for its lease to run out (found
-- by the fault suite's kill -9 storm: 9.6 s for a 2 s lease).
--
-- The line is the waiting index for a job without a group, and its group's own line
-- <prefix>gw:<group> otherwise (the job's `group` field; callers pass it, false or '' for
-- none). A group's first waiting job places the group (group_place) and records it in the
-- registry <prefix>groups; later ones change nothing about where the group is. The
-- queue's first grouped job switches its claims to the ring of groups for good (meta
-- `grouped`), with the jobs without a group as one more member of the ring, '' (they are
-- served fairly, neither first nor last).
local function enter_waiting(k, jobkey, id, priority, place, group, event, ...)
  redis.call('HSET', jobkey, 'state', 'waiting', ...)
  local score = place or waiting_score(k, tonumber(priority) or 0)
  if group and group ~= '' then
    local line = k.prefix .. 'gw:' .. group
    redis.call('ZADD', line, score, id)
    k.gwaiting = (k.gwaiting or 0) + 1
    local flow = queue_flow(k)
    if not (flow and flow[FLOW_GROUPED]) then
      redis.call('HSET', k.meta or k.prefix .. 'meta', 'grouped', '1', 'flow', '1')
      queue_meta(k)[META_FLOW] = '1'
      k.flow_read = nil
      flow = queue_flow(k)
      if redis.call('ZCARD', k.waiting or k.prefix .. 'waiting') > 0 then
        redis.call('ZADD', k.prefix .. 'gring', 'NX', flow[FLOW_VTIME] or '0', '')
      end
    end
    if redis.call('ZCARD', line) == 1 then
      redis.call('ZADD', k.prefix .. 'groups', 'NX', '0', group)
      group_place(k, group)
    end
  else
    local waiting = k.waiting or k.prefix .. 'waiting'
    redis.call('ZADD', waiting, score, id)
    wake(k)
    local flow = queue_flow(k)
    if flow and flow[FLOW_GROUPED] and redis.call('ZCARD', waiting) == 1 then
      local v = k.vtime or tonumber(flow[FLOW_VTIME]) or 0
      redis.call('ZADD', k.prefix .. 'gring', 'NX', num_text(v), '')
    end
  end
  emit(k, event, id, 'waiting')
end
