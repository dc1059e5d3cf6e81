-- What follows every claim: when the next scheduled job is due, how much is pending, and
-- whether the queue is paused ({jobs, next_due_ms, pending, paused}, see claim.lua).
local function claim_reply(k, jobs, paused, now)
  local next_due = -1
  local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  if #first > 0 then
    next_due = tonumber(first[2]) - now
    if next_due < 0 then next_due = 0 end
  end
  local pending = redis.call('ZCARD', k.waiting) + redis.call('ZCARD', k.scheduled)
  return {jobs, next_due, pending, paused}
end
