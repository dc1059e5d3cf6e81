-- include: read_job, enter_waiting, not_a_hash, leave_scheduled
-- Move due scheduled jobs to waiting (the body of `promote`, also run by `claim`).
-- `upto` (a due time, or '+inf') moves jobs due by then instead of by `now`.
local function promote_due(k, now, limit, upto)
  local due = redis.call('ZRANGEBYSCORE', k.scheduled, '-inf', upto or now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jobkey = k.prefix .. 'job:' .. id
    local f = read_job(jobkey, 'state', 'priority', 'group')
    leave_scheduled(k, id, f and f[1] == 'scheduled' and f[3])
    if not f then
      not_a_hash(k, jobkey, id, now)
    elseif f[1] == 'scheduled' then
      redis.call('HDEL', jobkey, 'scheduled_for')
      enter_waiting(k, jobkey, id, f[2], nil, f[3], {'promote'})
    end
  end
  return #due
end
