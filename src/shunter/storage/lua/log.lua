--[[ log: append one line to the job's log (capped list); fenced, no event.
KEYS[1] the job's log list
ARGV[1] key prefix   ARGV[2] job id   ARGV[3] fencing token   ARGV[4] the line
ARGV[5] max lines kept (oldest dropped)
Returns the number of lines kept, or a negative ErrorCode.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: none
]]
-- include: check_lease
local logs = KEYS[1]
local prefix, id, token, line, max_lines = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local code = check_lease(prefix .. 'job:' .. id, token)
if code ~= 0 then return code end
redis.call('RPUSH', logs, line)
redis.call('LTRIM', logs, -max_lines, -1)
return redis.call('LLEN', logs)
