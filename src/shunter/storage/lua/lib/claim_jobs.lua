-- include: replay_claim, promote_due, take_job, claim_groups, gcra, wake, claim_reply
-- include: queue_meta, queue_flow, ms_text, num_text
-- Take up to `count` waiting jobs for one worker (the body of `claim`, also run by
-- `complete` to claim the next jobs in the same round trip). Due scheduled jobs are
-- promoted first. Returns {jobs, next_due_ms, pending, paused} as documented in claim.lua;
-- each job is the HMGET of CLAIM_FIELDS, with what this claim wrote put in its place.
-- `claim_id` ('' for none): see replay_claim.
--
-- The queue-wide limits are applied before any job is taken, in O(1): the concurrency
-- limit (never more active jobs than it across all workers: the active index counts them,
-- so a crashed worker's jobs hold their slots until rescue, and every way out of active
-- frees one: see leave_active), the rate limit (gcra on the meta hash) and a park until a
-- time (RateLimited with scope "queue"). A queue that never had a grouped job pops its
-- waiting index directly; one that had goes through the ring of groups (claim_groups).
local function claim_jobs(k, count, lease_ms, worker, promote_limit, now, claim_id)
  local record_key
  if claim_id ~= '' then
    record_key = k.prefix .. 'claim:' .. claim_id
    local record = redis.call('GET', record_key)
    if record then return replay_claim(k, record, now) end
  end
  k.now = now
  promote_due(k, now, promote_limit)

  local meta = queue_meta(k)
  local paused = meta[META_PAUSED] and 1 or 0
  local limited = false
  local next_at  -- when a job held back by a queue-wide limit of time can start
  local limit = tonumber(meta[META_CONCURRENCY])
  if limit then
    local room = limit - redis.call('ZCARD', k.active)
    if room <= count then
      count = math.max(room, 0)
      limited = true
    end
  end
  local flow = queue_flow(k)
  local interval, rate_base
  if flow then
    local parked = tonumber(flow[FLOW_UNTIL])
    if parked and parked > now then
      count, limited, next_at = 0, true, parked
    end
    interval = tonumber(flow[FLOW_RATE_INTERVAL])
  end
  if interval and count > 0 then
    local room
    room, rate_base = gcra(flow[FLOW_RATE_TAT], now, interval, tonumber(flow[FLOW_RATE_BURST]) or 1,
      count)
    if room < count then
      limited = true
      if room == 0 then next_at = rate_base end
      count = room
    end
  end
  local c = {jobs = {}, handed = {}, now = now, worker = worker}
  if paused == 0 and count > 0 then
    c.started, c.deadline = ms_text(now), now + lease_ms
    if c.deadline % 1 == 0 and c.deadline < 9007199254740992 then
      c.deadline = string.format('%d', c.deadline)  -- the same digits Redis would make
    end
    if flow and flow[FLOW_GROUPED] then
      claim_groups(k, c, count)
      if not limited and redis.call('ZCARD', k.prefix .. 'gring') > 0 then wake(k) end
    else
      local popped = redis.call('ZPOPMIN', k.waiting, count)
      for i = 1, #popped, 2 do take_job(k, c, popped[i], popped[i + 1]) end
      -- More work for other idle workers, unless the limit is reached: then the next job
      -- to leave active wakes them (a wake now would only spin them).
      if not limited and redis.call('ZCARD', k.waiting) > 0 then wake(k) end
    end
    if interval and #c.jobs > 0 then
      redis.call('HSET', k.meta, 'rate_tat', num_text(rate_base + #c.jobs * interval))
    end
  end
  if record_key and #c.handed > 0 then
    local index = k.prefix .. 'claims'
    redis.call('SET', record_key, cjson.encode(c.handed), 'PX', lease_ms)
    redis.call('ZADD', index, now + lease_ms, claim_id)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  end
  return claim_reply(k, c.jobs, paused, now, next_at)
end
