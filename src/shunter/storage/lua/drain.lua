--[[ drain: delete up to N waiting and scheduled jobs (active and finished jobs stay), the
lines of groups included (the groups keep their limits and counts). Call repeatedly until
it returns 0.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] events
ARGV[1] key prefix   ARGV[2] max jobs per call   ARGV[3] max length of the event stream
Returns the number of jobs deleted. Their dedup keys are released (lib/dedup_release.lua).
Errors: none
Events: drain
]]
-- include: delete_job, emit, keep_seq, dedup_release
local waiting, scheduled = KEYS[1], KEYS[2]
local k = {events = KEYS[3], prefix = ARGV[1], maxev = ARGV[3]}
local limit = tonumber(ARGV[2])
local removed = 0
for _, index in ipairs({waiting, scheduled}) do
  local ids = redis.call('ZRANGE', index, 0, limit - removed - 1)
  for _, id in ipairs(ids) do
    local jobkey = k.prefix .. 'job:' .. id
    -- one read for both: a deleted holder frees its dedup key, a grouped scheduled job
    -- leaves its group's count (foreign data under the key has neither)
    local f = redis.pcall('HMGET', jobkey, 'dedup_key', 'dedup_mode', 'group')
    if not f.err then
      if f[1] then dedup_release(k.prefix, jobkey, id, f[1], f[2]) end
      if f[3] and index == scheduled then
        redis.call('HINCRBY', k.prefix .. 'gh:' .. f[3], 'scheduled', -1)
      end
    end
    delete_job(k.prefix, id)
  end
  if #ids > 0 then redis.call('ZREM', index, unpack(ids)) end
  removed = removed + #ids
  if removed >= limit then break end
end
-- the groups' lines, group by group in the registry's order
local gone = 0
local after = '-'
while removed < limit do
  local names = redis.call('ZRANGEBYLEX', k.prefix .. 'groups', after, '+', 'LIMIT', 0, 100)
  if #names == 0 then break end
  for _, group in ipairs(names) do
    local line = k.prefix .. 'gw:' .. group
    local ids = redis.call('ZRANGE', line, 0, limit - removed - 1)
    for _, id in ipairs(ids) do
      dedup_release(k.prefix, k.prefix .. 'job:' .. id, id)
      delete_job(k.prefix, id)
    end
    if #ids > 0 then redis.call('ZREM', line, unpack(ids)) end
    removed, gone = removed + #ids, gone + #ids
    if removed >= limit then break end
  end
  after = '(' .. names[#names]
end
if gone > 0 then k.gwaiting = -gone end
if removed > 0 then emit(k, {'drain', 'count', removed}, '', '') end
return keep_seq(k, removed)
