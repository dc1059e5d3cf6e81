--[[ release: active -> waiting without consuming an attempt (graceful shutdown); fenced.
A job whose cancel was requested while it ran is cancelled instead.
KEYS[1] active   KEYS[2] waiting   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] max length of the event stream
Returns 1, or a negative ErrorCode.
]]
local active, waiting, meta, events, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id, token, maxev = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local jobkey = prefix .. 'job:' .. id
local code = check_lease(jobkey, token)
if code ~= 0 then return code end
redis.call('ZREM', active, id)  -- the first write must not grow memory: see _common.lua
settled(jobkey, token)
if cancel_if_requested(jobkey, id, prefix, events, maxev, 'release') then return 1 end
requeue(jobkey, id, waiting, meta, marker)  -- back at the head: it was already under way
emit(events, maxev, 'release', id, 'waiting')
return 1
