-- Shared prelude, prepended to every script by shunter.scripts (not a transition itself).
-- Error codes mirror shunter.errors.ErrorCode.
local ERR_NOT_FOUND, ERR_NOT_IN_STATE, ERR_TOKEN, ERR_BUSY, ERR_WRONG_TYPE = -1, -2, -3, -4, -5

-- Server time in ms: delays, leases and stalls never depend on client clocks.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- One event per transition, in the same script, so stream order IS transition order.
local function emit(stream, maxlen, event, job_id, state, ...)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'event', event, 'job', job_id, 'state', state, ...)
end

-- Waiting order: higher priority first, FIFO within a priority (priority in [-1000, 1000];
-- 2^40 sequence numbers per band keeps every score exact in a double).
local function waiting_score(meta, priority)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  return (1000 - priority) * 1099511627776 + seq
end

local function wake(marker)
  redis.call('ZADD', marker, 0, '0')
end

local function make_waiting(jobkey, id, waiting, meta, marker)
  local priority = tonumber(redis.call('HGET', jobkey, 'priority')) or 0
  redis.call('HSET', jobkey, 'state', 'waiting')
  redis.call('HDEL', jobkey, 'scheduled_for')
  redis.call('ZADD', waiting, waiting_score(meta, priority), id)
  wake(marker)
end

-- Back to waiting at the place the job held when it was claimed (`place`, stored by
-- claim): a job rescued from a dead or frozen worker was at the head of the line and goes
-- back there. Queued behind the whole backlog instead, an
-- orphan waited for the backlog to drain, not for its lease to run out (found by the
-- fault suite's kill -9 storm: 9.6 s for a 2 s lease).
local function requeue(jobkey, id, waiting, meta, marker)
  local place = redis.call('HGET', jobkey, 'place')
  if not place then return make_waiting(jobkey, id, waiting, meta, marker) end
  redis.call('HSET', jobkey, 'state', 'waiting')
  redis.call('ZADD', waiting, place, id)
  wake(marker)
end

-- Wake an idle worker only when this due time is the new earliest, so it re-plans its wait.
local function schedule(jobkey, id, scheduled, marker, due)
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  redis.call('HSET', jobkey, 'state', 'scheduled', 'scheduled_for', due)
  redis.call('ZADD', scheduled, due, id)
  if #first == 0 or tonumber(first[2]) > due then wake(marker) end
end

-- A fenced write must come from the attempt that holds the current token. The token is
-- checked first: an attempt that was overtaken is told so (TOKEN_MISMATCH) whatever state
-- the job has reached since.
local function check_lease_with(jobkey, token, ...)
  -- reads state, token and any extra fields the caller needs in the same call
  local f = redis.call('HMGET', jobkey, 'state', 'token', ...)
  if not f[1] then return ERR_NOT_FOUND, f end
  if f[2] ~= token then return ERR_TOKEN, f end
  if f[1] ~= 'active' then return ERR_NOT_IN_STATE, f end
  return 0, f
end

local function check_lease(jobkey, token)
  local code = check_lease_with(jobkey, token)
  return code
end

-- Memory: under maxmemory with noeviction, Redis refuses a script whose FIRST write may
-- grow memory (HSET, ZADD, XADD, SET ...) and lets a script that has already written run
-- to its end. So the transitions of a job a worker holds (renew, complete, retry, fail,
-- abort, release) write first with ZREM from the active index: when memory is full,
-- producers are refused with a clear error, but workers still renew and settle what they
-- hold. (Found by the fault suite's out-of-memory scenario: retries were refused, leases
-- lapsed and the jobs ran twice.)

-- Record which attempt settled the job (complete, retry, fail, abort, release), so a worker
-- whose reply was lost can tell "my write landed" from "my lease was lost".
local function settled(jobkey, token)
  redis.call('HSET', jobkey, 'settled_token', token)
end

local function delete_job(prefix, id)
  redis.call('DEL', prefix .. 'job:' .. id, prefix .. 'logs:' .. id)
end

-- Retention: drop finished jobs beyond `count` or older than `age_ms` (-1 = no limit).
-- Work per call is bounded (200 per rule); every later finish trims again.
local function trim(index, prefix, now, count, age_ms)
  if age_ms >= 0 then
    local old = redis.call('ZRANGEBYSCORE', index, '-inf', now - age_ms, 'LIMIT', 0, 200)
    for _, id in ipairs(old) do delete_job(prefix, id) end
    if #old > 0 then redis.call('ZREM', index, unpack(old)) end
  end
  if count >= 0 then
    local excess = redis.call('ZCARD', index) - count
    if excess > 0 then
      if excess > 200 then excess = 200 end
      local ids = redis.call('ZRANGE', index, 0, excess - 1)
      for _, id in ipairs(ids) do delete_job(prefix, id) end
      redis.call('ZREM', index, unpack(ids))
    end
  end
end

-- Put a job into a terminal index, honouring the retention rule stored on the job
-- ("<count>:<age_ms>"); a count of 0 deletes the job at once. A script that finishes many
-- jobs passes `trims` to collect the rule per index and trim once at the end (see
-- trim_all): trimming after every job of a batch is most of a completion's server work.
local function finish(jobkey, id, index, prefix, now, keep_field, trims, keep)
  keep = keep or redis.call('HGET', jobkey, keep_field) or '-1:-1'
  local count, age = string.match(keep, '^(-?%d+):(-?%d+)$')
  count, age = tonumber(count) or -1, tonumber(age) or -1
  if count == 0 then
    delete_job(prefix, id)
  else
    redis.call('ZADD', index, now, id)
    if trims then
      trims[index] = {count, age}
    else
      trim(index, prefix, now, count, age)
    end
  end
end

local function trim_all(trims, prefix, now)
  for index, rule in pairs(trims) do trim(index, prefix, now, rule[1], rule[2]) end
end

-- A cancel asked for while the attempt ran wins over running the job again (`retry`,
-- `release`): the job ends cancelled, with the event of the verb. True when it did.
local function cancel_if_requested(jobkey, id, prefix, events, maxev, verb)
  if redis.call('HEXISTS', jobkey, 'cancel_requested') == 0 then return false end
  local now = now_ms()
  redis.call('HSET', jobkey, 'state', 'cancelled', 'cancelled_at', now, 'finished_at', now)
  emit(events, maxev, verb, id, 'cancelled')
  finish(jobkey, id, prefix .. 'cancelled', prefix, now, 'keep_failed')
  return true
end

-- A job that cannot be handled (its key is not a hash, or a counter is not an integer) is
-- failed with the reason instead of run or skipped. A script must not raise half-way:
-- Redis does not undo what it already did, so jobs it had popped would be left in no index
-- at all, and the worker would die on the error. The failed index is built from the
-- prefix, as job keys are, since the callers do not all declare it.
local function fail_corrupt(prefix, jobkey, id, now, events, maxev, kind, message)
  if redis.call('TYPE', jobkey)['ok'] ~= 'hash' then
    redis.call('DEL', jobkey)  -- foreign data under our job key; the error says what it was
    redis.call('HSET', jobkey, 'id', id, 'task', '')
  end
  redis.call('HSET', jobkey, 'state', 'failed', 'finished_at', now, 'error',
    cjson.encode({type = kind, message = message, traceback = ''}))
  redis.call('ZADD', prefix .. 'failed', now, id)
  emit(events, maxev, 'fail', id, 'failed')
end

local function not_a_hash(prefix, jobkey, id, now, events, maxev)
  fail_corrupt(prefix, jobkey, id, now, events, maxev, 'DecodeError', 'job key holds a ' ..
    redis.call('TYPE', jobkey)['ok'] .. ', not a hash; it was not run')
end

-- Move due scheduled jobs to waiting (the body of `promote`, also run by `claim`).
local function promote_due(scheduled, waiting, meta, events, marker, maxev, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jobkey = prefix .. 'job:' .. id
    redis.call('ZREM', scheduled, id)
    local state = redis.pcall('HGET', jobkey, 'state')
    if type(state) == 'table' then
      not_a_hash(prefix, jobkey, id, now, events, maxev)
    elseif state == 'scheduled' then
      make_waiting(jobkey, id, waiting, meta, marker)
      emit(events, maxev, 'promote', id, 'waiting')
    end
  end
  return #due
end

-- The fields a worker needs of a claimed job, in this order (shunter.scripts reads this
-- list, so Python decodes the reply with the same one). claim_jobs patches positions 1, 4,
-- 5 and 14 (id, state, token, started_at) of the reply: keep them where they are. Not HGETALL: a retried job's old
-- traceback and the bookkeeping fields would be parsed for nothing on the hot path.
local CLAIM_FIELDS = {'id', 'task', 'data', 'state', 'token', 'priority', 'attempts_made',
  'max_attempts', 'stalls', 'deferrals', 'timeout_ms', 'backoff', 'created_at', 'started_at',
  'progress', 'cancel_requested'}

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

-- A claim request id makes a claim idempotent. When the connection drops after the script
-- ran, the client (redis-py's retry, or the worker's own) sends the same call again; a
-- second claim would take a second batch and leave the first in `active` with nobody
-- running it, to be rescued as stalls that can dead-letter jobs that never ran. So a claim
-- with an id records the (job, token) pairs it handed out under <prefix>claim:<id> for one
-- lease, and a claim that finds that record returns the same jobs instead (those still
-- active under the recorded token) and claims nothing new. The zset <prefix>claims indexes
-- the records (score: when they expire) so that obliterate finds them; it is pruned here.
local function replay_claim(k, prefix, record, now)
  local pairs_ = cjson.decode(record)
  local jobs = {}
  for i = 1, #pairs_, 2 do
    local f = redis.pcall('HMGET', prefix .. 'job:' .. pairs_[i], unpack(CLAIM_FIELDS))
    if not f.err and f[4] == 'active' and f[5] == pairs_[i + 1] then
      f[1] = pairs_[i]
      jobs[#jobs + 1] = f
    end
  end
  return claim_reply(k, jobs, redis.call('HEXISTS', k.meta, 'paused'), now)
end

-- Take up to `count` waiting jobs for one worker (the body of `claim`, also run by
-- `complete` to claim the next jobs in the same round trip). Due scheduled jobs are
-- promoted first. Returns {jobs, next_due_ms, pending, paused} as documented in claim.lua.
-- `claim_id` ('' for none): see replay_claim.
local function claim_jobs(k, prefix, count, lease_ms, worker, maxev, promote_limit, now, claim_id)
  local record_key
  if claim_id ~= '' then
    record_key = prefix .. 'claim:' .. claim_id
    local record = redis.call('GET', record_key)
    if record then return replay_claim(k, prefix, record, now) end
  end
  promote_due(k.scheduled, k.waiting, k.meta, k.events, k.marker, maxev, prefix, now, promote_limit)

  -- A job that cannot be claimed (see fail_corrupt) is failed with the reason, not run.
  local function reject(jobkey, id, kind, message)
    fail_corrupt(prefix, jobkey, id, now, k.events, maxev, kind, message)
  end

  local jobs = {}
  local handed = {}
  local paused = redis.call('HEXISTS', k.meta, 'paused')
  if paused == 0 and count > 0 then
    local popped = redis.call('ZPOPMIN', k.waiting, count)
    for i = 1, #popped, 2 do
      local id = popped[i]
      local jobkey = prefix .. 'job:' .. id
      -- One read gives both what the checks need and the reply (patched below with what
      -- this claim writes): the hot path reads each job once.
      local f = redis.pcall('HMGET', jobkey, unpack(CLAIM_FIELDS))
      local state = f[4]
      local token = tonumber(f[5] or '0')
      if f.err then
        reject(jobkey, id, 'DecodeError', 'job key holds a ' .. redis.call('TYPE', jobkey)['ok'] ..
          ', not a hash; it was not run')
      elseif state == 'waiting' then
        if not token or token ~= math.floor(token) or token < 0 then
          reject(jobkey, id, 'DecodeError', 'job hash has a token that is not an integer; it was not run')
        else
          token = string.format('%d', token + 1)
          local started = string.format('%d', now)
          -- 'id' is written again for hashes written by hand without it: the worker needs it
          redis.call('HSET', jobkey, 'state', 'active', 'token', token, 'started_at', started,
            'worker', worker, 'id', id, 'place', popped[i + 1])
          redis.call('ZADD', k.active, now + lease_ms, id)
          emit(k.events, maxev, 'claim', id, 'active', 'token', token, 'worker', worker)
          f[1], f[4], f[5], f[14] = id, 'active', token, started
          jobs[#jobs + 1] = f
          handed[#handed + 1] = id
          handed[#handed + 1] = token
        end
      elseif state then
        -- The index says waiting but the hash disagrees (written by hand, or corrupted):
        -- surface it as a failed job instead of running it or losing it silently.
        reject(jobkey, id, 'CorruptJob', 'job hash has state ' .. state .. ' but was in the waiting index')
      end
      -- no hash at all: a dangling id (the job was removed); dropping it is the repair
    end
    if redis.call('ZCARD', k.waiting) > 0 then wake(k.marker) end
  end
  if record_key and #handed > 0 then
    local index = prefix .. 'claims'
    redis.call('SET', record_key, cjson.encode(handed), 'PX', lease_ms)
    redis.call('ZADD', index, now + lease_ms, claim_id)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  end
  return claim_reply(k, jobs, paused, now)
end
