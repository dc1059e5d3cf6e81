--[[ cancel: a waiting or scheduled job -> cancelled at once; an active job is flagged and
its worker is told at its next lease renewal (it then calls `abort`).
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] cancelled   KEYS[4] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] cancelled by   ARGV[4] reason
ARGV[5] max length of the event stream
Returns 1 when cancelled, 2 when cancellation of an active job was requested, or a
negative ErrorCode (finished jobs cannot be cancelled).
]]
local waiting, scheduled, cancelled, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, id, by, reason, maxev = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jobkey = prefix .. 'job:' .. id
local state = redis.call('HGET', jobkey, 'state')
if not state then return ERR_NOT_FOUND end
if state == 'active' then
  redis.call('HSET', jobkey, 'cancel_requested', 1, 'cancelled_by', by, 'cancel_reason', reason)
  emit(events, maxev, 'cancel', id, 'active', 'by', by)
  return 2
end
if state ~= 'waiting' and state ~= 'scheduled' then return ERR_NOT_IN_STATE end
local now = now_ms()
redis.call('ZREM', waiting, id)
redis.call('ZREM', scheduled, id)
redis.call('HSET', jobkey, 'state', 'cancelled', 'cancelled_at', now, 'finished_at', now,
  'cancelled_by', by, 'cancel_reason', reason)
emit(events, maxev, 'cancel', id, 'cancelled', 'by', by)
finish(jobkey, id, cancelled, prefix, now, 'keep_failed')
return 1
