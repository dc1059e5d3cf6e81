--[[ enqueue: create one or many jobs in `waiting` (or `scheduled` when they have a future
time). An id that already exists, in any state, returns that job and changes nothing:
this is what makes producer retries and concurrent producers safe.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix ("shunter:{queue}:")   ARGV[2] max length of the event stream
ARGV[3..] one group per job: job id, delay in ms after server time (0 = now), absolute
  run time as unix ms or "" (takes precedence over the delay), priority (-1000..1000),
  number of hash arguments n, then n field/value arguments (task, data, ...)
Returns {created, state, created, state, ...}: created is 1 for a new job, 0 when the id
existed (state is then the existing job's state).
]]
local waiting, scheduled, meta, events, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, maxev = ARGV[1], ARGV[2]
local now = now_ms()
local out = {}
local i = 3
while i <= #ARGV do
  local id, delay, run_at, priority = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  local nfields = tonumber(ARGV[i + 4])
  local first, last = i + 5, i + 4 + nfields
  i = last + 1
  local jobkey = prefix .. 'job:' .. id
  local existing = redis.call('HGET', jobkey, 'state')
  if existing then
    out[#out + 1] = 0
    out[#out + 1] = existing
  else
    local due = now + delay
    if run_at ~= '' then due = tonumber(run_at) end
    local state = 'waiting'
    if due > now then state = 'scheduled' end
    redis.call('HSET', jobkey, 'id', id, 'state', state, 'created_at', now, 'token', 0,
      'attempts_made', 0, 'stalls', 0, 'deferrals', 0, unpack(ARGV, first, last))
    if state == 'scheduled' then
      schedule(jobkey, id, scheduled, marker, due)
    else
      redis.call('ZADD', waiting, waiting_score(meta, priority), id)
      wake(marker)
    end
    emit(events, maxev, 'enqueue', id, state)
    out[#out + 1] = 1
    out[#out + 1] = state
  end
end
return out
