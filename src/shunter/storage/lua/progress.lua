--[[ progress: store the handler's progress (any JSON) and announce it; fenced.
KEYS[1] events
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] progress as JSON
ARGV[5] max length of the event stream
Returns 1, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: progress
]]
-- include: check_lease, attempt_event, emit, keep_seq
local k = {events = KEYS[1], prefix = ARGV[1], maxev = ARGV[5]}
local id, token, progress = ARGV[2], ARGV[3], ARGV[4]
local jobkey = k.prefix .. 'job:' .. id
local code, f = check_lease(jobkey, token, 'attempts_made', 'worker')
if code ~= 0 then return code end
redis.call('HSET', jobkey, 'progress', progress)
-- Small values ride in the event (for live followers); large ones are only stored, so a
-- capped stream of 10k entries never holds gigabytes.
local event = attempt_event('progress', token, f[3], f[4])
if #progress <= 2048 then
  event[#event + 1] = 'progress'
  event[#event + 1] = progress
else
  event[#event + 1] = 'progress_bytes'
  event[#event + 1] = #progress
end
emit(k, event, id, 'active')
return keep_seq(k, 1)
