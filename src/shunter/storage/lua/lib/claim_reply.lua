-- include: queue_flow
-- What follows every claim: when a job that is not waiting now can start, how much is
-- pending, and whether the queue is paused ({jobs, next_due_ms, pending, paused}, see
-- claim.lua). next_due_ms is the time until the earliest of: the next scheduled job, the
-- next group blocked by its rate (or parked), and `next_at` (a queue-wide limit of time,
-- unix ms, or nil): idle workers sleep exactly that long, so a queue whose every group is
-- blocked costs a worker a claim per wake-up, not a poll.
local function claim_reply(k, jobs, paused, now, next_at)
  local next_due = -1
  local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  if #first > 0 then next_due = tonumber(first[2]) end
  local flow = queue_flow(k)
  local pending = redis.call('ZCARD', k.waiting) + redis.call('ZCARD', k.scheduled)
  if flow and flow[FLOW_GROUPED] then
    pending = pending + (tonumber(flow[FLOW_GWAITING]) or 0) + (k.gwaiting or 0)
    local blocked = redis.call('ZRANGE', k.prefix .. 'gwake', 0, 0, 'WITHSCORES')
    if #blocked > 0 and (next_due < 0 or tonumber(blocked[2]) < next_due) then
      next_due = tonumber(blocked[2])
    end
  end
  if next_at and (next_due < 0 or next_at < next_due) then next_due = next_at end
  if next_due >= 0 then
    next_due = math.ceil(next_due - now)
    if next_due < 0 then next_due = 0 end
  end
  return {jobs, next_due, pending, paused}
end
