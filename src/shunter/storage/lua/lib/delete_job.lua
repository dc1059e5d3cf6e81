-- Remove a job's hash and its log list.
local function delete_job(prefix, id)
  redis.call('DEL', prefix .. 'job:' .. id, prefix .. 'logs:' .. id)
end
