--[[ resume: undo pause and wake an idle worker.
KEYS[1] meta   KEYS[2] events   KEYS[3] marker
ARGV[1] max length of the event stream
Returns 1.
]]
redis.call('HDEL', KEYS[1], 'paused')
wake(KEYS[3])
emit(KEYS[2], ARGV[1], 'resume', '', '')
return 1
