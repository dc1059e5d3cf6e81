--[[ configure: store queue-wide settings in the queue's meta hash, so that producers and
workers cannot disagree: `max_events` (the event stream's cap, read by every script that
appends an event), `max_payload_bytes` (checked by enqueue, and loaded by producers and
workers for their own checks) and `concurrency` (most jobs active at once across all
workers, enforced by claim; "0" removes the limit). A value of "" leaves that setting as
it is.
KEYS[1] meta   KEYS[2] events   KEYS[3] marker
ARGV[1] max_events or ""   ARGV[2] max_payload_bytes or ""
ARGV[3] the caller's cap of the event stream (used if the queue stores none)
ARGV[4] concurrency or "" ("0": no limit)
Returns {max_events, max_payload_bytes, concurrency} as now stored (false where none).
Errors: none
Events: configure
]]
-- include: emit, keep_seq, wake
local k = {meta = KEYS[1], events = KEYS[2], marker = KEYS[3], maxev = ARGV[3]}
for i, name in ipairs({'max_events', 'max_payload_bytes'}) do
  if ARGV[i] ~= '' then
    redis.call('HSET', k.meta, name, ARGV[i])
  end
end
local concurrency = ARGV[4] or ''
if concurrency == '0' then
  redis.call('HDEL', k.meta, 'concurrency')
  wake(k)  -- jobs held back by the old limit can go
elseif concurrency ~= '' then
  redis.call('HSET', k.meta, 'concurrency', concurrency)
  wake(k)  -- a higher limit frees slots
end
local stored = redis.call('HMGET', k.meta, 'max_events', 'max_payload_bytes', 'concurrency')
emit(k, {'configure', 'max_events', stored[1] or '', 'max_payload_bytes', stored[2] or '',
  'concurrency', stored[3] or ''}, '', '')
return keep_seq(k, stored)
