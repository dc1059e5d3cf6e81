--[[ pause: workers stop claiming from this queue (jobs already active run on).
KEYS[1] meta   KEYS[2] events
ARGV[1] max length of the event stream
Returns 1.
Errors: none
Events: pause
]]
-- include: emit
redis.call('HSET', KEYS[1], 'paused', 1)
emit({meta = KEYS[1], events = KEYS[2], maxev = ARGV[1]}, {'pause'}, '', '')
return 1
