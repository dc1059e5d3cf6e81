-- A fenced write must come from the attempt that holds the current token. The token is
-- checked first: an attempt that was overtaken is told so (TOKEN_MISMATCH) whatever state
-- the job has reached since. Reads state, token and the fields named after them in one
-- HMGET; returns 0 or a negative code, and the values in that order (false when absent).
local function check_lease(jobkey, token, ...)
  local f = redis.call('HMGET', jobkey, 'state', 'token', ...)
  if not f[1] then return ERR_JOB_NOT_FOUND, f end
  if f[2] ~= token then return ERR_TOKEN_MISMATCH, f end
  if f[1] ~= 'active' then return ERR_NOT_IN_STATE, f end
  return 0, f
end
