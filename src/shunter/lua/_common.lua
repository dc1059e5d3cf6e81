-- Shared prelude, prepended to every script by shunter.scripts (not a transition itself).
-- Error codes mirror shunter.errors.ErrorCode.
local ERR_NOT_FOUND, ERR_NOT_IN_STATE, ERR_TOKEN, ERR_BUSY = -1, -2, -3, -4

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

-- Wake an idle worker only when this due time is the new earliest, so it re-plans its wait.
local function schedule(jobkey, id, scheduled, marker, due)
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  redis.call('HSET', jobkey, 'state', 'scheduled', 'scheduled_for', due)
  redis.call('ZADD', scheduled, due, id)
  if #first == 0 or tonumber(first[2]) > due then wake(marker) end
end

-- A fenced write must come from the attempt that holds the current token.
local function check_lease(jobkey, token)
  local f = redis.call('HMGET', jobkey, 'state', 'token')
  if not f[1] then return ERR_NOT_FOUND end
  if f[1] ~= 'active' then return ERR_NOT_IN_STATE end
  if f[2] ~= token then return ERR_TOKEN end
  return 0
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
-- ("<count>:<age_ms>"); a count of 0 deletes the job at once.
local function finish(jobkey, id, index, prefix, now, keep_field)
  local keep = redis.call('HGET', jobkey, keep_field) or '-1:-1'
  local count, age = string.match(keep, '^(-?%d+):(-?%d+)$')
  count, age = tonumber(count) or -1, tonumber(age) or -1
  if count == 0 then
    delete_job(prefix, id)
  else
    redis.call('ZADD', index, now, id)
    trim(index, prefix, now, count, age)
  end
end

-- Move due scheduled jobs to waiting (the body of `promote`, also run by `claim`).
local function promote_due(scheduled, waiting, meta, events, marker, maxev, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jobkey = prefix .. 'job:' .. id
    redis.call('ZREM', scheduled, id)
    if redis.call('HGET', jobkey, 'state') == 'scheduled' then
      make_waiting(jobkey, id, waiting, meta, marker)
      emit(events, maxev, 'promote', id, 'waiting')
    end
  end
  return #due
end
