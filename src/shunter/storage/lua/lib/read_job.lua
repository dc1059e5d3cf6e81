-- The values of the fields named, in order (false when absent), or nil when the job's key
-- holds something other than a hash: a script must not raise half-way (see fail_corrupt).
local function read_job(jobkey, ...)
  local f = redis.pcall('HMGET', jobkey, ...)
  if f.err then return nil end
  return f
end
