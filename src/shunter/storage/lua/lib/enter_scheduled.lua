-- include: wake, emit
-- Make a job wait until `due` (unix ms): state `scheduled` and `scheduled_for` with the
-- hash fields that follow `event` (one HSET), an entry in the scheduled index, and the
-- move's event. An idle worker is woken only when this due time is the new earliest, so
-- it re-plans its wait. A grouped job (`group`, false or '' for none) counts in its
-- group's `scheduled` (see leave_scheduled for the way out).
local function enter_scheduled(k, jobkey, id, due, group, event, ...)
  local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  redis.call('HSET', jobkey, 'state', 'scheduled', 'scheduled_for', due, ...)
  redis.call('ZADD', k.scheduled, due, id)
  if group and group ~= '' then redis.call('HINCRBY', k.prefix .. 'gh:' .. group, 'scheduled', 1) end
  if #first == 0 or tonumber(first[2]) > due then wake(k) end
  emit(k, event, id, 'scheduled')
end
