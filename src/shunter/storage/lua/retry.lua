--[[ retry: active -> scheduled (after a backoff) or waiting (no delay); fenced. If a cancel
was requested while the attempt ran, the job is cancelled instead (the user's word wins).
KEYS[1] active   KEYS[2] scheduled   KEYS[3] waiting   KEYS[4] meta   KEYS[5] events
KEYS[6] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] delay in ms
ARGV[5] error as JSON   ARGV[6] "1" to count an attempt, "0" for a deferral (RetryAfter)
ARGV[7] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: retry
]]
-- include: now_ms, check_lease, leave_active, attempt_event, error_event, cancel_if_requested
-- include: enter_scheduled, enter_waiting, keep_seq
local k = {active = KEYS[1], scheduled = KEYS[2], waiting = KEYS[3], meta = KEYS[4],
  events = KEYS[5], marker = KEYS[6], prefix = ARGV[1], maxev = ARGV[7]}
local id, token, delay, err, counts = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local jobkey = k.prefix .. 'job:' .. id
local code, f = check_lease(jobkey, token, 'attempts_made', 'deferrals', 'worker', 'priority',
  'cancel_requested', 'cancelled_by', 'cancel_reason', 'keep_failed', 'group')
if code ~= 0 then return code end
local _, _, attempts, deferrals, worker, priority, requested, by, reason, keep, group = unpack(f)
leave_active(k, id, group)
k.group = group
-- a failed attempt counts; a deferral (RetryAfter) is counted apart
local counter, count = 'deferrals', deferrals
if counts == '1' then counter, count = 'attempts_made', attempts end
local set = {'settled_token', token, counter, string.format('%d', (tonumber(count) or 0) + 1),
  'error', err}
local event = error_event(attempt_event('retry', token, attempts, worker), err)
if cancel_if_requested(k, jobkey, id, requested, by, reason, keep, event, unpack(set)) then
  return keep_seq(k, 1)
end
event[#event + 1] = 'delay_ms'
event[#event + 1] = delay
if delay > 0 then
  enter_scheduled(k, jobkey, id, now_ms() + delay, group, event, unpack(set))
else
  enter_waiting(k, jobkey, id, priority, nil, group, event, unpack(set))
end
return keep_seq(k, 1)
