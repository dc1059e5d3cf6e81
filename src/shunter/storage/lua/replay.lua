--[[ replay: failed or cancelled -> waiting, with fresh attempts (dead-letter replay).
KEYS[1] failed   KEYS[2] cancelled   KEYS[3] waiting   KEYS[4] meta   KEYS[5] events
KEYS[6] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, NOT_IN_STATE
Events: replay
]]
-- include: enter_waiting, keep_seq
local k = {failed = KEYS[1], cancelled = KEYS[2], waiting = KEYS[3], meta = KEYS[4],
  events = KEYS[5], marker = KEYS[6], prefix = ARGV[1], maxev = ARGV[3]}
local id = ARGV[2]
local jobkey = k.prefix .. 'job:' .. id
local job = redis.call('HMGET', jobkey, 'state', 'priority', 'group')
if not job[1] then return ERR_JOB_NOT_FOUND end
if job[1] ~= 'failed' and job[1] ~= 'cancelled' then return ERR_NOT_IN_STATE end
redis.call('ZREM', k.failed, id)
redis.call('ZREM', k.cancelled, id)
-- scheduled_for: a job cancelled while scheduled still has it
redis.call('HDEL', jobkey, 'cancel_requested', 'cancelled_at', 'cancelled_by', 'cancel_reason',
  'finished_at', 'result', 'scheduled_for')
enter_waiting(k, jobkey, id, job[2], nil, job[3], {'replay'}, 'attempts_made', '0', 'stalls', '0',
  'deferrals', '0', 'throttled', '0')
return keep_seq(k, 1)
