-- Give up a job's dedup key (lib/dedup_hit.lua) when the job finishes or is deleted: `key`
-- is its `dedup_key`, `mode` its `dedup_mode` (both read from the job when `key` is nil,
-- `mode` when only it is; foreign data under the job's key has neither). Only if the
-- key still names this job: a debounce key passes to a new job while its holder runs, and
-- a replayed job never took its key back. A throttle key is a period, not a holder: it is
-- kept until it expires, unless `all` (obliterate: the queue is going). The add-time check
-- frees a key whose holder is gone or finished anyway; this keeps such keys from
-- lingering in memory.
local function dedup_release(prefix, jobkey, id, key, mode, all)
  if key == nil then
    local f = redis.pcall('HMGET', jobkey, 'dedup_key', 'dedup_mode')
    if f.err or not f[1] then return end
    key, mode = f[1], f[2]
  end
  if mode == nil then mode = redis.call('HGET', jobkey, 'dedup_mode') end
  if mode == 'throttle' and not all then return end
  local entry = prefix .. 'dedup:' .. key
  if redis.call('GET', entry) == id then redis.call('DEL', entry) end
end
