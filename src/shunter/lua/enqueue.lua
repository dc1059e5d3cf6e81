--[[ enqueue: create a job in `waiting` (or `scheduled` when it has a future time).
An id that already exists, in any state, returns that job and changes nothing: this is
what makes producer retries and concurrent producers safe.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix ("shunter:{queue}:")
ARGV[2] job id
ARGV[3] delay in ms after server time (0 = now)
ARGV[4] absolute run time as unix ms, or "" (takes precedence over the delay)
ARGV[5] max length of the event stream
ARGV[6..] field/value pairs of the job hash (task, data, priority, max_attempts, ...)
Returns {1, state} when created, {0, state} when the id existed.
]]
local waiting, scheduled, meta, events, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id, delay, run_at, maxev = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local jobkey = prefix .. 'job:' .. id

local existing = redis.call('HGET', jobkey, 'state')
if existing then return {0, existing} end

local now = now_ms()
local due = now + delay
if run_at ~= '' then due = tonumber(run_at) end

redis.call('HSET', jobkey, unpack(ARGV, 6))
redis.call('HSET', jobkey, 'id', id, 'created_at', now, 'token', 0, 'attempts_made', 0,
  'stalls', 0, 'deferrals', 0)
local state
if due > now then
  schedule(jobkey, id, scheduled, marker, due)
  state = 'scheduled'
else
  make_waiting(jobkey, id, waiting, meta, marker)
  state = 'waiting'
end
emit(events, maxev, 'enqueue', id, state)
return {1, state}
