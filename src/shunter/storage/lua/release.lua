--[[ release: active -> waiting without consuming an attempt (graceful shutdown); fenced.
Back at the place in line it was claimed from: it was already under way. A job whose
cancel was requested while it ran is cancelled instead.
KEYS[1] active   KEYS[2] waiting   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: release
]]
-- include: check_lease, leave_active, attempt_event, cancel_if_requested, enter_waiting
-- include: keep_seq
local k = {active = KEYS[1], waiting = KEYS[2], meta = KEYS[3], events = KEYS[4],
  marker = KEYS[5], prefix = ARGV[1], maxev = ARGV[4]}
local id, token = ARGV[2], ARGV[3]
local jobkey = k.prefix .. 'job:' .. id
local code, f = check_lease(jobkey, token, 'attempts_made', 'worker', 'priority', 'place',
  'cancel_requested', 'cancelled_by', 'cancel_reason', 'keep_failed', 'group')
if code ~= 0 then return code end
local _, _, attempts, worker, priority, place, requested, by, reason, keep, group = unpack(f)
leave_active(k, id, group)
k.group = group
local event = attempt_event('release', token, attempts, worker)
if cancel_if_requested(k, jobkey, id, requested, by, reason, keep, event, 'settled_token', token) then
  return keep_seq(k, 1)
end
enter_waiting(k, jobkey, id, priority, place or nil, group, event, 'settled_token', token)
return keep_seq(k, 1)
