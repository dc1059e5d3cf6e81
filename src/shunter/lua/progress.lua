--[[ progress: store the handler's progress (any JSON) and announce it; fenced.
KEYS[1] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] progress as JSON
ARGV[5] max length of the event stream
Returns 1, or a negative ErrorCode.
]]
local events = KEYS[1]
local prefix, id, token, progress, maxev = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jobkey = prefix .. 'job:' .. id
local code = check_lease(jobkey, token)
if code ~= 0 then return code end
redis.call('HSET', jobkey, 'progress', progress)
-- Small values ride in the event (for live followers); large ones are only stored, so a
-- capped stream of 10k entries never holds gigabytes.
if #progress <= 2048 then
  emit(events, maxev, 'progress', id, 'active', 'progress', progress)
else
  emit(events, maxev, 'progress', id, 'active', 'progress_bytes', #progress)
end
return 1
