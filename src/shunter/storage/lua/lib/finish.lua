-- include: emit, delete_job, trim, ms_text, dedup_release
-- End a job: state `state` (completed, failed or cancelled), `finished_at` (and, when
-- cancelled, `cancelled_at`) with the hash fields that follow `event` (one HSET), the
-- move's event, then its entry in the terminal index under the job's retention rule `keep`
-- ("<count>:<age_ms>", -1 = no limit; read from the job when nil): a count of 0 deletes the
-- job at once. With k.trims (complete: many jobs per call) the rule is collected per index
-- and trim_all trims once at the end: trimming after every job of a batch was most of a
-- completion's server work. The index is k[state], or built from the prefix as job keys
-- are when the caller does not declare it (a repair inside claim or promote). A script
-- that ends a grouped job sets k.group to its group first: the group's hash counts its
-- jobs by terminal state.
-- `dedup` is the job's `dedup_key` (false: it has none; nil: read it here), released when
-- it still names this job (dedup_release). Callers that read the job anyway pass it, so a
-- job without dedup costs nothing more here (complete: one more field of its HMGET).
local function finish(k, jobkey, id, state, now, keep, dedup, event, ...)
  local at = ms_text(now)
  if state == 'cancelled' then
    redis.call('HSET', jobkey, 'state', state, 'finished_at', at, 'cancelled_at', at, ...)
  else
    redis.call('HSET', jobkey, 'state', state, 'finished_at', at, ...)
  end
  if dedup == nil then dedup = redis.call('HGET', jobkey, 'dedup_key') end
  if dedup then dedup_release(k.prefix, jobkey, id, dedup) end
  emit(k, event, id, state)
  -- a grouped job (k.group, set by the script for the job it ends) counts in its group
  if k.group and k.group ~= '' then
    redis.call('HINCRBY', k.prefix .. 'gh:' .. k.group, state, 1)
  end
  if not keep then
    local field = 'keep_failed'
    if state == 'completed' then field = 'keep_completed' end
    keep = redis.call('HGET', jobkey, field) or '-1:-1'
  end
  local count, age = string.match(keep, '^(-?%d+):(-?%d+)$')
  count, age = tonumber(count) or -1, tonumber(age) or -1
  if count == 0 then
    delete_job(k.prefix, id)
    return
  end
  local index = k[state] or k.prefix .. state
  redis.call('ZADD', index, at, id)
  if k.trims then
    k.trims[index] = {count, age}
  else
    trim(index, k.prefix, now, count, age)
  end
end
