--[[ complete: active -> completed with the handler's result; fenced.
KEYS[1] active   KEYS[2] completed   KEYS[3] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] result as JSON
ARGV[5] max length of the event stream
Returns 1, or a negative ErrorCode (TOKEN_MISMATCH: another attempt owns the job).
]]
local active, completed, events = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, token, result, maxev = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jobkey = prefix .. 'job:' .. id
local code = check_lease(jobkey, token)
if code ~= 0 then return code end
local now = now_ms()
redis.call('ZREM', active, id)
redis.call('HSET', jobkey, 'state', 'completed', 'finished_at', now, 'result', result)
emit(events, maxev, 'complete', id, 'completed')
finish(jobkey, id, completed, prefix, now, 'keep_completed')
return 1
