--[[ pause: workers stop claiming from this queue (jobs already active run on).
KEYS[1] meta   KEYS[2] events
ARGV[1] max length of the event stream
Returns 1.
Errors: none
Events: pause
]]
-- include: emit, keep_seq
local k = {meta = KEYS[1], events = KEYS[2], maxev = ARGV[1]}
redis.call('HSET', k.meta, 'paused', 1)
emit(k, {'pause'}, '', '')
return keep_seq(k, 1)
