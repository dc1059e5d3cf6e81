--[[ obliterate: delete a queue and all its jobs, N jobs per call; call until it returns 0.
Refuses while jobs are active unless forced (their workers would lose them silently).
The groups' lines, hashes and active sets, their registry and the ring go too.
KEYS[1] active  KEYS[2] waiting  KEYS[3] scheduled  KEYS[4] completed  KEYS[5] failed
KEYS[6] cancelled  KEYS[7] meta  KEYS[8] events  KEYS[9] marker  KEYS[10] rescue lock
ARGV[1] key prefix   ARGV[2] max jobs per call   ARGV[3] "1" to force
Returns the number of jobs deleted by this call (0 when the queue is gone), or QUEUE_BUSY.
Dedup keys held by deleted jobs are deleted too (a throttle key whose holder was already
deleted expires by itself).
Errors: QUEUE_BUSY
Events: none (the stream itself is deleted)
]]
-- include: delete_job, dedup_release
local prefix, limit, force = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if force ~= '1' and redis.call('ZCARD', KEYS[1]) > 0 then return ERR_QUEUE_BUSY end
local removed = 0
for i = 1, 6 do
  if removed < limit then
    local ids = redis.call('ZRANGE', KEYS[i], 0, limit - removed - 1)
    for _, id in ipairs(ids) do
      -- a unique key has no time-to-live: left behind, it would outlive the queue
      dedup_release(prefix, prefix .. 'job:' .. id, id, nil, nil, true)
      delete_job(prefix, id)
    end
    if #ids > 0 then redis.call('ZREM', KEYS[i], unpack(ids)) end
    removed = removed + #ids
  end
end
-- the groups' lines (their jobs are in no state index), then their keys
local groups = prefix .. 'groups'
local after = '-'
while removed < limit do
  local names = redis.call('ZRANGEBYLEX', groups, after, '+', 'LIMIT', 0, 100)
  if #names == 0 then break end
  for _, group in ipairs(names) do
    local line = prefix .. 'gw:' .. group
    local ids = redis.call('ZRANGE', line, 0, limit - removed - 1)
    for _, id in ipairs(ids) do delete_job(prefix, id) end
    if #ids > 0 then redis.call('ZREM', line, unpack(ids)) end
    removed = removed + #ids
    if removed >= limit then break end
  end
  after = '(' .. names[#names]
end
if removed == 0 then
  for _, group in ipairs(redis.call('ZRANGE', groups, 0, -1)) do
    redis.call('DEL', prefix .. 'gh:' .. group, prefix .. 'gw:' .. group, prefix .. 'ga:' .. group)
  end
  redis.call('DEL', groups, prefix .. 'gring', prefix .. 'gwake')
  redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], KEYS[10])
  -- worker heartbeats (an index of ids, one expiring key each)
  local workers = prefix .. 'workers'
  for _, id in ipairs(redis.call('ZRANGE', workers, 0, -1)) do
    redis.call('DEL', prefix .. 'worker:' .. id)
  end
  redis.call('DEL', workers)
  -- claim records (see lib/replay_claim.lua), each expiring on its own
  local claims = prefix .. 'claims'
  for _, id in ipairs(redis.call('ZRANGE', claims, 0, -1)) do
    redis.call('DEL', prefix .. 'claim:' .. id)
  end
  redis.call('DEL', claims)
end
return removed
