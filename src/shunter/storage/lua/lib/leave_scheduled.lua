-- Take a job out of the scheduled index (promote, cancel, a debounce that runs it now, drain):
-- a grouped job (`group`, false or '' for none) no longer counts in its group's
-- `scheduled` (see enter_scheduled). Only when it was there, so the count cannot drift.
local function leave_scheduled(k, id, group)
  local removed = redis.call('ZREM', k.scheduled or k.prefix .. 'scheduled', id)
  if removed == 1 and group and group ~= '' then
    redis.call('HINCRBY', k.prefix .. 'gh:' .. group, 'scheduled', -1)
  end
end
