--[[ claim: take up to N waiting jobs for one worker (promoting due scheduled jobs first).
Each claimed job gets a new fencing token (per-job counter) and a lease deadline; every
later write of this attempt must present that token.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] active   KEYS[4] meta   KEYS[5] events
KEYS[6] marker    KEYS[7] failed
ARGV[1] key prefix   ARGV[2] max jobs to claim   ARGV[3] lease in ms   ARGV[4] worker id
ARGV[5] max length of the event stream   ARGV[6] max scheduled jobs to promote
Returns {jobs, next_due_ms, pending, paused}: jobs is a list of HGETALL replies (with the
new token); next_due_ms is ms until the earliest scheduled job (-1 if none); pending is
waiting + scheduled after the claim; paused is 1 when the queue is paused.
]]
local waiting, scheduled, active, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local events, marker, failed = KEYS[5], KEYS[6], KEYS[7]
local prefix, count, lease_ms, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local maxev, promote_limit = ARGV[5], tonumber(ARGV[6])

local now = now_ms()
promote_due(scheduled, waiting, meta, events, marker, maxev, prefix, now, promote_limit)

local jobs = {}
local paused = redis.call('HEXISTS', meta, 'paused')
if paused == 0 then
  local popped = redis.call('ZPOPMIN', waiting, count)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local jobkey = prefix .. 'job:' .. id
    local state = redis.call('HGET', jobkey, 'state')
    if state == 'waiting' then
      local token = redis.call('HINCRBY', jobkey, 'token', 1)
      redis.call('HSET', jobkey, 'state', 'active', 'started_at', now, 'worker', worker)
      redis.call('ZADD', active, now + lease_ms, id)
      emit(events, maxev, 'claim', id, 'active', 'token', token)
      jobs[#jobs + 1] = redis.call('HGETALL', jobkey)
    elseif state then
      -- The index says waiting but the hash disagrees (written by hand, or corrupted):
      -- surface it as a failed job instead of running it or losing it silently.
      redis.call('HSET', jobkey, 'state', 'failed', 'finished_at', now, 'error',
        cjson.encode({type = 'CorruptJob', message = 'job hash has state ' .. state ..
          ' but was in the waiting index', traceback = ''}))
      redis.call('ZADD', failed, now, id)
      emit(events, maxev, 'fail', id, 'failed')
    end
    -- no hash at all: a dangling id (the job was removed); dropping it is the repair
  end
  if redis.call('ZCARD', waiting) > 0 then wake(marker) end
end

local next_due = -1
local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
if #first > 0 then
  next_due = tonumber(first[2]) - now
  if next_due < 0 then next_due = 0 end
end
local pending = redis.call('ZCARD', waiting) + redis.call('ZCARD', scheduled)
return {jobs, next_due, pending, paused}
