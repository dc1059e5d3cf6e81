--[[ fail: active -> failed (the dead-letter set); fenced.
KEYS[1] active   KEYS[2] failed   KEYS[3] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] error as JSON
ARGV[5] "1" to count the attempt   ARGV[6] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: fail
]]
-- include: check_lease, leave_active, attempt_event, error_event, finish, now_ms, keep_seq
local k = {active = KEYS[1], failed = KEYS[2], events = KEYS[3], prefix = ARGV[1],
  maxev = ARGV[6]}
local id, token, err, counts = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jobkey = k.prefix .. 'job:' .. id
local code, f = check_lease(jobkey, token, 'attempts_made', 'worker', 'keep_failed', 'group',
  'dedup_key')
if code ~= 0 then return code end
local _, _, attempts, worker, keep, group, dedup = unpack(f)
leave_active(k, id, group)
k.group = group
local event = error_event(attempt_event('fail', token, attempts, worker), err)
keep = keep or '-1:-1'
if counts == '1' then
  finish(k, jobkey, id, 'failed', now_ms(), keep, dedup, event, 'settled_token', token,
    'error', err, 'attempts_made', string.format('%d', (tonumber(attempts) or 0) + 1))
else
  finish(k, jobkey, id, 'failed', now_ms(), keep, dedup, event, 'settled_token', token,
    'error', err)
end
return keep_seq(k, 1)
