--[[ abort: active -> cancelled, by the worker that stopped a handler after a cancel
request; fenced.
KEYS[1] active   KEYS[2] cancelled   KEYS[3] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] max length of the event stream
Returns 1, or a negative ErrorCode.
]]
local active, cancelled, events = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, token, maxev = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local jobkey = prefix .. 'job:' .. id
local code = check_lease(jobkey, token)
if code ~= 0 then return code end
redis.call('ZREM', active, id)  -- the first write must not grow memory: see _common.lua
settled(jobkey, token)
local now = now_ms()
redis.call('HSET', jobkey, 'state', 'cancelled', 'cancelled_at', now, 'finished_at', now)
emit(events, maxev, 'abort', id, 'cancelled')
finish(jobkey, id, cancelled, prefix, now, 'keep_failed')
return 1
