--[[ ratelimited: active -> waiting without using an attempt, because the handler raised
RateLimited (the remote said 429); fenced. The job goes back to the head of its line (the
place it was claimed from) and counts one `throttled`; its group, or with scope "queue"
(or a job without a group) the whole queue, is parked: nothing of it starts before
now + delay (group: `until` in its hash, then group_place puts it in the wake-up set;
queue: meta `until`, read by every claim). A job whose cancel was requested while it ran
is cancelled instead.
KEYS[1] active   KEYS[2] waiting   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] delay in ms
ARGV[5] scope: "group" or "queue"   ARGV[6] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: ratelimited
]]
-- include: now_ms, check_lease, leave_active, attempt_event, cancel_if_requested, enter_waiting
-- include: keep_seq, num_text, group_place
local k = {active = KEYS[1], waiting = KEYS[2], meta = KEYS[3], events = KEYS[4],
  marker = KEYS[5], prefix = ARGV[1], maxev = ARGV[6]}
local id, token, delay, scope = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local jobkey = k.prefix .. 'job:' .. id
local code, f = check_lease(jobkey, token, 'attempts_made', 'worker', 'priority', 'place',
  'cancel_requested', 'cancelled_by', 'cancel_reason', 'keep_failed', 'group', 'throttled')
if code ~= 0 then return code end
local _, _, attempts, worker, priority, place, requested, by, reason, keep, group, throttled = unpack(f)
leave_active(k, id, group)
k.group = group
local event = attempt_event('ratelimited', token, attempts, worker)
if cancel_if_requested(k, jobkey, id, requested, by, reason, keep, event, 'settled_token', token) then
  return keep_seq(k, 1)
end
k.now = now_ms()
local until_ = num_text(k.now + delay)
event[#event + 1] = 'delay_ms'
event[#event + 1] = delay
if group and scope ~= 'queue' then
  -- parked before the job is back in line, so that group_place sees it
  redis.call('HSET', k.prefix .. 'gh:' .. group, 'until', until_)
  event[#event + 1] = 'parked'
  event[#event + 1] = 'group'
else
  redis.call('HSET', k.meta, 'until', until_, 'flow', '1')
  k.meta_read, k.flow_read = nil, nil
  event[#event + 1] = 'parked'
  event[#event + 1] = 'queue'
end
enter_waiting(k, jobkey, id, priority, place or nil, group, event, 'settled_token', token,
  'throttled', string.format('%d', (tonumber(throttled) or 0) + 1))
if group and scope ~= 'queue' and redis.call('ZCARD', k.prefix .. 'gw:' .. group) > 1 then
  group_place(k, group)  -- its line was not empty: enter_waiting did not place it
end
return keep_seq(k, 1)
