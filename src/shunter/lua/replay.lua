--[[ replay: failed or cancelled -> waiting, with fresh attempts (dead-letter replay).
KEYS[1] failed   KEYS[2] cancelled   KEYS[3] waiting   KEYS[4] meta   KEYS[5] events
KEYS[6] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] max length of the event stream
Returns 1, or a negative ErrorCode.
]]
local failed, cancelled, waiting, meta, events, marker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, id, maxev = ARGV[1], ARGV[2], ARGV[3]
local jobkey = prefix .. 'job:' .. id
local state = redis.call('HGET', jobkey, 'state')
if not state then return ERR_NOT_FOUND end
if state ~= 'failed' and state ~= 'cancelled' then return ERR_NOT_IN_STATE end
redis.call('ZREM', failed, id)
redis.call('ZREM', cancelled, id)
redis.call('HSET', jobkey, 'attempts_made', 0, 'stalls', 0, 'deferrals', 0)
redis.call('HDEL', jobkey, 'cancel_requested', 'cancelled_at', 'cancelled_by', 'cancel_reason',
  'finished_at', 'result')
make_waiting(jobkey, id, waiting, meta, marker)
emit(events, maxev, 'replay', id, 'waiting')
return 1
