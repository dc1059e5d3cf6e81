--[[ cancel: a waiting or scheduled job -> cancelled at once; an active job is flagged and
its worker is told at its next lease renewal (it then calls `abort`).
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] cancelled   KEYS[4] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] cancelled by   ARGV[4] reason
ARGV[5] max length of the event stream
Returns 1 when cancelled, 2 when cancellation of an active job was requested, or a
negative ErrorCode (finished jobs cannot be cancelled).
Errors: JOB_NOT_FOUND, NOT_IN_STATE
Events: cancel
]]
-- include: emit, finish_cancelled, now_ms, keep_seq, leave_scheduled
local k = {waiting = KEYS[1], scheduled = KEYS[2], cancelled = KEYS[3], events = KEYS[4],
  prefix = ARGV[1], maxev = ARGV[5]}
local id, by, reason = ARGV[2], ARGV[3], ARGV[4]
local jobkey = k.prefix .. 'job:' .. id
local state, group = unpack(redis.call('HMGET', jobkey, 'state', 'group'))
if not state then return ERR_JOB_NOT_FOUND end
if state ~= 'active' and state ~= 'waiting' and state ~= 'scheduled' then
  return ERR_NOT_IN_STATE
end
if state == 'active' then
  -- not a move: the job stays active, flagged for its worker
  redis.call('HSET', jobkey, 'cancel_requested', 1, 'cancelled_by', by, 'cancel_reason', reason)
  emit(k, {'cancel', 'by', by, 'reason', reason}, id, 'active')
  return keep_seq(k, 2)
end
redis.call('ZREM', k.waiting, id)
leave_scheduled(k, id, state == 'scheduled' and group)
if group then
  -- out of its group's line (the group may stay in the ring with an empty line: the next
  -- claim that pops it drops it) and counted in its group
  if redis.call('ZREM', k.prefix .. 'gw:' .. group, id) == 1 then k.gwaiting = -1 end
  k.group = group
end
finish_cancelled(k, jobkey, id, now_ms(), nil, by, reason, {'cancel'},
  'cancelled_by', by, 'cancel_reason', reason)
return keep_seq(k, 1)
