-- include: claim_fields, not_a_hash, fail_corrupt, attempt_event, emit
-- Start one job popped from a line at score `place` (claim_jobs, claim_groups): state
-- active with a new fencing token and the batch's lease deadline `c.deadline`, as worker
-- `c.worker`, started at `c.started` (both as text, made once for the batch: see
-- ms_text). The job goes into c.jobs (the HMGET of CLAIM_FIELDS with what this claim
-- wrote put in its place) and (id, token) into c.handed; returns true. A job that cannot
-- be claimed (see fail_corrupt) is failed with the reason instead, not run; a dangling id
-- (no hash: the job was removed) is dropped, which is the repair; both return false.
local function take_job(k, c, id, place)
  local jobkey = k.prefix .. 'job:' .. id
  -- One read gives both what the checks need and the reply (patched below with what this
  -- claim writes): the hot path reads each job once.
  local f = redis.pcall('HMGET', jobkey, unpack(CLAIM_FIELDS))
  local state = f[F_STATE]
  local token = tonumber(f[F_TOKEN] or '0')
  if f.err then
    not_a_hash(k, jobkey, id, c.now)
  elseif state == 'waiting' then
    if not token or token ~= math.floor(token) or token < 0 then
      fail_corrupt(k, jobkey, id, c.now, 'DecodeError',
        'job hash has a token that is not an integer; it was not run')
    else
      token = string.format('%d', token + 1)
      -- 'id' is written again for hashes written by hand without it: the worker needs it
      redis.call('HSET', jobkey, 'state', 'active', 'token', token, 'started_at', c.started,
        'worker', c.worker, 'id', id, 'place', place)
      redis.call('ZADD', k.active, c.deadline, id)
      emit(k, attempt_event('claim', token, f[F_ATTEMPTS_MADE], c.worker), id, 'active')
      f[F_ID], f[F_STATE], f[F_TOKEN], f[F_STARTED_AT] = id, 'active', token, c.started
      c.jobs[#c.jobs + 1] = f
      c.handed[#c.handed + 1] = id
      c.handed[#c.handed + 1] = token
      return true
    end
  elseif state then
    -- The index says waiting but the hash disagrees (written by hand, or corrupted):
    -- surface it as a failed job instead of running it or losing it silently.
    fail_corrupt(k, jobkey, id, c.now, 'CorruptJob',
      'job hash has state ' .. state .. ' but was in the waiting index')
  end
  return false
end
