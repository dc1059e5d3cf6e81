--[[ rescue: recover active jobs whose lease expired (their worker died or froze).
Back to waiting, at the place in line it was claimed from; to failed once stalls exceed
max_stalls; to cancelled if a cancel was requested. Leaderless: any worker may call it;
a SET NX PX key limits how often it runs.
KEYS[1] active   KEYS[2] waiting   KEYS[3] failed   KEYS[4] cancelled   KEYS[5] meta
KEYS[6] events   KEYS[7] marker   KEYS[8] rescue lock
ARGV[1] key prefix   ARGV[2] max stalls   ARGV[3] lock time in ms (0 = no lock)
ARGV[4] max jobs per call   ARGV[5] max length of the event stream
Returns {rescued, ran}: ran is 0 when another worker holds the lock.
Errors: none
Events: rescue, fail
]]
-- include: now_ms, leave_active, read_job, not_a_hash, attempt_event, error_event, finish
-- include: finish_cancelled, enter_waiting, keep_seq
local k = {active = KEYS[1], waiting = KEYS[2], failed = KEYS[3], cancelled = KEYS[4],
  meta = KEYS[5], events = KEYS[6], marker = KEYS[7], prefix = ARGV[1], maxev = ARGV[5]}
local lock = KEYS[8]
local max_stalls, lock_ms, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if lock_ms > 0 and not redis.call('SET', lock, '1', 'NX', 'PX', lock_ms) then return {0, 0} end
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', k.active, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local jobkey = k.prefix .. 'job:' .. id
  -- read first (a read, so leave_active's ZREM stays the first write): the group whose
  -- slot the job holds
  local f = read_job(jobkey, 'state', 'token', 'attempts_made', 'worker', 'stalls', 'priority',
    'place', 'cancel_requested', 'cancelled_by', 'cancel_reason', 'keep_failed', 'group',
    'dedup_key')
  local group = f and f[12]
  leave_active(k, id, group)
  k.group = group
  if not f then
    not_a_hash(k, jobkey, id, now)
  elseif f[1] == 'active' then
    local _, token, attempts, worker, stalls, priority, place, requested, by, reason, keep, _,
      dedup = unpack(f)
    stalls = (tonumber(stalls) or 0) + 1
    local counted = string.format('%d', stalls)
    local event = attempt_event('rescue', token, attempts, worker)
    event[#event + 1] = 'stalls'
    event[#event + 1] = stalls
    if requested then
      finish_cancelled(k, jobkey, id, now, keep, by, reason, event, 'stalls', counted)
    elseif stalls > max_stalls then
      local err = {type = 'Stalled', traceback = '',
        message = 'lease expired ' .. stalls .. ' times (max_stalls=' .. max_stalls .. ')'}
      finish(k, jobkey, id, 'failed', now, keep or nil, dedup, error_event(event, err),
        'stalls', counted, 'attempts_made', string.format('%d', (tonumber(attempts) or 0) + 1),
        'error', cjson.encode(err))
    else
      enter_waiting(k, jobkey, id, priority, place or nil, group, event, 'stalls', counted)
    end
  end
end
k.group = nil
return keep_seq(k, {#expired, 1})
