--[[ clean: delete finished jobs (completed, failed or cancelled) that finished at least a
given age ago, oldest first, at most N per call; call until it returns less than N.
Waiting and scheduled jobs are drain's business; active jobs are never touched.
KEYS[1] the state's index (completed, failed or cancelled zset, score = finish time)
KEYS[2] events
ARGV[1] key prefix   ARGV[2] state name (for the event)   ARGV[3] minimum age in ms
ARGV[4] max jobs per call   ARGV[5] max length of the event stream
Returns the number of jobs deleted by this call.
Errors: none
Events: clean
]]
-- include: now_ms, delete_job, emit, keep_seq
local index = KEYS[1]
local k = {events = KEYS[2], prefix = ARGV[1], maxev = ARGV[5]}
local state, age_ms, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', index, '-inf', now_ms() - age_ms, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do delete_job(k.prefix, id) end
if #ids > 0 then
  redis.call('ZREM', index, unpack(ids))
  emit(k, {'clean', 'count', #ids}, '', state)
end
return keep_seq(k, #ids)
