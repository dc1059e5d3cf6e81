--[[ retry: active -> scheduled (after a backoff) or waiting (no delay); fenced. If a cancel
was requested while the attempt ran, the job is cancelled instead (the user's word wins).
KEYS[1] active   KEYS[2] scheduled   KEYS[3] waiting   KEYS[4] meta   KEYS[5] events
KEYS[6] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] delay in ms
ARGV[5] error as JSON   ARGV[6] "1" to count an attempt, "0" for a deferral (RetryAfter)
ARGV[7] max length of the event stream
Returns 1, or a negative ErrorCode.
]]
local active, scheduled, waiting, meta, events, marker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, id, token, delay = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local err, counts, maxev = ARGV[5], ARGV[6], ARGV[7]
local jobkey = prefix .. 'job:' .. id
local code = check_lease(jobkey, token)
if code ~= 0 then return code end
redis.call('ZREM', active, id)  -- the first write must not grow memory: see _common.lua
settled(jobkey, token)
if counts == '1' then
  redis.call('HINCRBY', jobkey, 'attempts_made', 1)
else
  redis.call('HINCRBY', jobkey, 'deferrals', 1)
end
redis.call('HSET', jobkey, 'error', err)
if cancel_if_requested(jobkey, id, prefix, events, maxev, 'retry') then return 1 end
local state = 'waiting'
if delay > 0 then
  schedule(jobkey, id, scheduled, marker, now_ms() + delay)
  state = 'scheduled'
else
  make_waiting(jobkey, id, waiting, meta, marker)
end
emit(events, maxev, 'retry', id, state, 'delay_ms', delay)
return 1
