--[[ fail: active -> failed (the dead-letter set); fenced.
KEYS[1] active   KEYS[2] failed   KEYS[3] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] error as JSON
ARGV[5] "1" to count the attempt   ARGV[6] max length of the event stream
Returns 1, or a negative ErrorCode.
]]
local active, failed, events = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, token, err, counts, maxev = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local jobkey = prefix .. 'job:' .. id
local code = check_lease(jobkey, token)
if code ~= 0 then return code end
redis.call('ZREM', active, id)  -- the first write must not grow memory: see _common.lua
settled(jobkey, token)
local now = now_ms()
if counts == '1' then redis.call('HINCRBY', jobkey, 'attempts_made', 1) end
redis.call('HSET', jobkey, 'state', 'failed', 'finished_at', now, 'error', err)
emit(events, maxev, 'fail', id, 'failed')
finish(jobkey, id, failed, prefix, now, 'keep_failed')
return 1
