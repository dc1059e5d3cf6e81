--[[ rescue: recover active jobs whose lease expired (their worker died or froze).
Back to waiting, at the place in line it was claimed from; to failed once stalls exceed
max_stalls; to cancelled if a cancel was requested. Leaderless: any worker may call it;
a SET NX PX key limits how often it runs.
KEYS[1] active   KEYS[2] waiting   KEYS[3] failed   KEYS[4] cancelled   KEYS[5] meta
KEYS[6] events   KEYS[7] marker   KEYS[8] rescue lock
ARGV[1] key prefix   ARGV[2] max stalls   ARGV[3] lock time in ms (0 = no lock)
ARGV[4] max jobs per call   ARGV[5] max length of the event stream
Returns {rescued, ran}: ran is 0 when another worker holds the lock.
]]
local active, waiting, failed, cancelled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta, events, marker, lock = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local prefix, max_stalls, lock_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, maxev = tonumber(ARGV[4]), ARGV[5]
if lock_ms > 0 and not redis.call('SET', lock, '1', 'NX', 'PX', lock_ms) then return {0, 0} end
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local jobkey = prefix .. 'job:' .. id
  redis.call('ZREM', active, id)
  local f = redis.pcall('HMGET', jobkey, 'state', 'cancel_requested')
  if f.err then
    not_a_hash(prefix, jobkey, id, now, events, maxev)
  elseif f[1] == 'active' then
    local stalls = redis.call('HINCRBY', jobkey, 'stalls', 1)
    local state
    if f[2] then
      redis.call('HSET', jobkey, 'state', 'cancelled', 'cancelled_at', now, 'finished_at', now)
      state = 'cancelled'
      emit(events, maxev, 'rescue', id, state, 'stalls', stalls)
      finish(jobkey, id, cancelled, prefix, now, 'keep_failed')
    elseif stalls > max_stalls then
      redis.call('HINCRBY', jobkey, 'attempts_made', 1)
      redis.call('HSET', jobkey, 'state', 'failed', 'finished_at', now, 'error', cjson.encode({
        type = 'Stalled', traceback = '',
        message = 'lease expired ' .. stalls .. ' times (max_stalls=' .. max_stalls .. ')'}))
      state = 'failed'
      emit(events, maxev, 'rescue', id, state, 'stalls', stalls)
      finish(jobkey, id, failed, prefix, now, 'keep_failed')
    else
      requeue(jobkey, id, waiting, meta, marker)
      state = 'waiting'
      emit(events, maxev, 'rescue', id, state, 'stalls', stalls)
    end
  end
end
return {#expired, 1}
