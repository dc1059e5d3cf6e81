--[[ renew: extend the leases of the jobs one worker holds (called off the event loop).
Not a state change, so it appends no event.
KEYS[1] active
ARGV[1] key prefix   ARGV[2] lease in ms   ARGV[3..] pairs of job id, fencing token
Returns one code per job: 1 renewed, 2 renewed but cancellation was requested,
or a negative ErrorCode when the lease is lost (the worker must stop that handler).
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: none
]]
-- include: now_ms, check_lease
local active = KEYS[1]
local prefix, lease_ms = ARGV[1], tonumber(ARGV[2])
local deadline = now_ms() + lease_ms
local out = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local code, f = check_lease(prefix .. 'job:' .. id, token, 'cancel_requested')
  if code == 0 then
    -- ZREM then ZADD rather than ZADD XX: the first write must not grow memory, so leases
    -- are still renewed when memory is full (see lib/leave_active.lua)
    if redis.call('ZREM', active, id) == 1 then redis.call('ZADD', active, deadline, id) end
    code = 1
    if f[3] then code = 2 end  -- cancel_requested
  end
  out[#out + 1] = code
end
return out
