--[[ abort: active -> cancelled, by the worker that stopped a handler after a cancel
request; fenced.
KEYS[1] active   KEYS[2] cancelled   KEYS[3] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: abort
]]
-- include: check_lease, leave_active, attempt_event, finish_cancelled, now_ms, keep_seq
local k = {active = KEYS[1], cancelled = KEYS[2], events = KEYS[3], prefix = ARGV[1],
  maxev = ARGV[4]}
local id, token = ARGV[2], ARGV[3]
local jobkey = k.prefix .. 'job:' .. id
local code, f = check_lease(jobkey, token, 'attempts_made', 'worker', 'cancelled_by',
  'cancel_reason', 'keep_failed', 'group')
if code ~= 0 then return code end
local _, _, attempts, worker, by, reason, keep, group = unpack(f)
leave_active(k, id, group)
k.group = group
finish_cancelled(k, jobkey, id, now_ms(), keep, by, reason,
  attempt_event('abort', token, attempts, worker), 'settled_token', token)
return keep_seq(k, 1)
