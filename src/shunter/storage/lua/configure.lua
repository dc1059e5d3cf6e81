--[[ configure: store queue-wide settings in the queue's meta hash, so that producers and
workers cannot disagree: `max_events` (the event stream's cap, read by every script that
appends an event), `max_payload_bytes` (checked by enqueue, and loaded by producers and
workers for their own checks), `concurrency` (most jobs active at once across all
workers, enforced by claim), the queue-wide rate limit (`rate`: "limit:period_ms:burst" as
given, with `rate_interval` and `rate_burst`, what claim reads: see gcra) and every
group's default limits (`group_concurrency`, `group_rate` with `group_interval` and
`group_burst`). Pairs not given are left as they are; a value of "" removes the setting.
KEYS[1] meta   KEYS[2] events   KEYS[3] marker
ARGV[1] the caller's cap of the event stream (used if the queue stores none)
ARGV[2..] pairs of setting name and value (names from the list above)
Returns the stored values of SETTINGS (shunter.storage.calls), in that order (false where
none), or {ERR_NOT_IN_STATE, name} for an unknown name (nothing written).
Errors: NOT_IN_STATE
Events: configure
]]
-- include: emit, keep_seq, wake
local k = {meta = KEYS[1], events = KEYS[2], marker = KEYS[3], maxev = ARGV[1]}
local known = {max_events = true, max_payload_bytes = true, concurrency = true, rate = true,
  rate_interval = true, rate_burst = true, group_concurrency = true, group_rate = true,
  group_interval = true, group_burst = true}
for i = 2, #ARGV, 2 do
  if not known[ARGV[i]] then return {ERR_NOT_IN_STATE, ARGV[i]} end
end
for i = 2, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if value == '' then
    redis.call('HDEL', k.meta, name)
  else
    redis.call('HSET', k.meta, name, value)
  end
end
for i = 2, #ARGV, 2 do
  if ARGV[i] ~= 'max_events' and ARGV[i] ~= 'max_payload_bytes' and ARGV[i] ~= 'concurrency' then
    redis.call('HSET', k.meta, 'flow', '1')  -- flow control's fields are read from now on
    break
  end
end
-- a lifted or raised limit frees jobs it held back: an idle worker looks again
wake(k)
local names = {'max_events', 'max_payload_bytes', 'concurrency', 'rate', 'group_concurrency',
  'group_rate'}
local stored = redis.call('HMGET', k.meta, unpack(names))
-- the event says what is in effect now, every setting ('' where none is stored)
local event = {'configure'}
for i, name in ipairs(names) do
  event[#event + 1] = name
  event[#event + 1] = stored[i] or ''
end
emit(k, event, '', '')
return keep_seq(k, stored)
