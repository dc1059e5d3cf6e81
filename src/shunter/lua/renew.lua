--[[ renew: extend the leases of the jobs one worker holds (called off the event loop).
Not a state change, so it appends no event.
KEYS[1] active
ARGV[1] key prefix   ARGV[2] lease in ms   ARGV[3..] pairs of job id, fencing token
Returns one code per job: 1 renewed, 2 renewed but cancellation was requested,
or a negative ErrorCode when the lease is lost (the worker must stop that handler).
]]
local active = KEYS[1]
local prefix, lease_ms = ARGV[1], tonumber(ARGV[2])
local deadline = now_ms() + lease_ms
local out = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jobkey = prefix .. 'job:' .. id
  local code = check_lease(jobkey, token)
  if code == 0 then
    -- ZREM then ZADD rather than ZADD XX: the first write must not grow memory, so leases
    -- are still renewed when memory is full (see _common.lua)
    if redis.call('ZREM', active, id) == 1 then redis.call('ZADD', active, deadline, id) end
    code = 1
    if redis.call('HEXISTS', jobkey, 'cancel_requested') == 1 then code = 2 end
  end
  out[#out + 1] = code
end
return out
