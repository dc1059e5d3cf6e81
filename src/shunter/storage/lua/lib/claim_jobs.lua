-- include: claim_fields, replay_claim, promote_due, not_a_hash, fail_corrupt, attempt_event, emit,
-- include: wake, claim_reply, queue_meta, ms_text
-- Take up to `count` waiting jobs for one worker (the body of `claim`, also run by
-- `complete` to claim the next jobs in the same round trip). Due scheduled jobs are
-- promoted first. Returns {jobs, next_due_ms, pending, paused} as documented in claim.lua;
-- each job is the HMGET of CLAIM_FIELDS, with what this claim wrote put in its place.
-- `claim_id` ('' for none): see replay_claim.
local function claim_jobs(k, count, lease_ms, worker, promote_limit, now, claim_id)
  local record_key
  if claim_id ~= '' then
    record_key = k.prefix .. 'claim:' .. claim_id
    local record = redis.call('GET', record_key)
    if record then return replay_claim(k, record, now) end
  end
  promote_due(k, now, promote_limit)

  local jobs = {}
  local handed = {}
  local meta = queue_meta(k)
  local paused = meta[META_PAUSED] and 1 or 0
  -- The queue-wide concurrency limit: never more active jobs than it, across all workers
  -- (the active index counts them, so a crashed worker's jobs hold their slots until
  -- rescue, and every way out of active frees one: see leave_active).
  local limited = false
  local limit = tonumber(meta[META_CONCURRENCY])
  if limit then
    local room = limit - redis.call('ZCARD', k.active)
    if room <= count then
      count = math.max(room, 0)
      limited = true
    end
  end
  if paused == 0 and count > 0 then
    local popped = redis.call('ZPOPMIN', k.waiting, count)
    local started, deadline  -- as text, made once for the batch (see ms_text)
    if #popped > 0 then
      started, deadline = ms_text(now), now + lease_ms
      if deadline % 1 == 0 and deadline < 9007199254740992 then
        deadline = string.format('%d', deadline)  -- the same digits Redis would make
      end
    end
    for i = 1, #popped, 2 do
      local id = popped[i]
      local jobkey = k.prefix .. 'job:' .. id
      -- One read gives both what the checks need and the reply (patched below with what
      -- this claim writes): the hot path reads each job once.
      local f = redis.pcall('HMGET', jobkey, unpack(CLAIM_FIELDS))
      local state = f[F_STATE]
      local token = tonumber(f[F_TOKEN] or '0')
      -- A job that cannot be claimed (see fail_corrupt) is failed with the reason, not run.
      if f.err then
        not_a_hash(k, jobkey, id, now)
      elseif state == 'waiting' then
        if not token or token ~= math.floor(token) or token < 0 then
          fail_corrupt(k, jobkey, id, now, 'DecodeError',
            'job hash has a token that is not an integer; it was not run')
        else
          token = string.format('%d', token + 1)
          -- 'id' is written again for hashes written by hand without it: the worker needs it
          redis.call('HSET', jobkey, 'state', 'active', 'token', token, 'started_at', started,
            'worker', worker, 'id', id, 'place', popped[i + 1])
          redis.call('ZADD', k.active, deadline, id)
          emit(k, attempt_event('claim', token, f[F_ATTEMPTS_MADE], worker), id, 'active')
          f[F_ID], f[F_STATE], f[F_TOKEN], f[F_STARTED_AT] = id, 'active', token, started
          jobs[#jobs + 1] = f
          handed[#handed + 1] = id
          handed[#handed + 1] = token
        end
      elseif state then
        -- The index says waiting but the hash disagrees (written by hand, or corrupted):
        -- surface it as a failed job instead of running it or losing it silently.
        fail_corrupt(k, jobkey, id, now, 'CorruptJob',
          'job hash has state ' .. state .. ' but was in the waiting index')
      end
      -- no hash at all: a dangling id (the job was removed); dropping it is the repair
    end
    -- More work for other idle workers, unless the limit is reached: then the next job
    -- to leave active wakes them (a wake now would only spin them).
    if not limited and redis.call('ZCARD', k.waiting) > 0 then wake(k) end
  end
  if record_key and #handed > 0 then
    local index = k.prefix .. 'claims'
    redis.call('SET', record_key, cjson.encode(handed), 'PX', lease_ms)
    redis.call('ZADD', index, now + lease_ms, claim_id)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  end
  return claim_reply(k, jobs, paused, now)
end
