--[[ resume: undo pause and wake an idle worker.
KEYS[1] meta   KEYS[2] events   KEYS[3] marker
ARGV[1] max length of the event stream
Returns 1.
Errors: none
Events: resume
]]
-- include: wake, emit, keep_seq
local k = {meta = KEYS[1], events = KEYS[2], marker = KEYS[3], maxev = ARGV[1]}
redis.call('HDEL', k.meta, 'paused')
wake(k)
emit(k, {'resume'}, '', '')
return keep_seq(k, 1)
