--[[ enqueue: create one or many jobs in `waiting` (or `scheduled` when they have a future
time). An id that already exists, in any state, returns that job and changes nothing:
this is what makes producer retries and concurrent producers safe.
The script never raises half-way (Redis would keep what it had written, leaving part of a
batch, or a job hash in no index): foreign data under a job's key refuses that one job,
with nothing written for it, and the rest of the batch is stored; foreign data under one
of the queue's own keys refuses the whole call before anything is written.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix ("shunter:{queue}:")   ARGV[2] max length of the event stream
ARGV[3..] one group of arguments per job: job id, delay in ms after server time (0 = now),
  absolute run time as unix ms or "" (takes precedence over the delay), priority
  (-1000..1000), its group ("" for none; the fields carry it too), number of hash
  arguments n, then n field/value arguments (task, data, ...)
Returns {now, reply, reply, ...}: now is the server time in unix ms (the created_at of
every job this call created), then one reply per job, in order:
  {1, 'waiting'} or {1, 'scheduled', due_ms}   created
  {0, {field, value, ...}}                     the id existed: its whole hash, unchanged
  {2, holder id, 'dedup' or 'debounce', {field, value, ...}}
                                               its dedup key is held (lib/dedup_hit.lua):
                                               the holder's whole hash (after a debounce
                                               changed it; empty for a throttle key whose
                                               holder is gone); nothing created
  {ERR_WRONG_TYPE, type}                       the job key holds a <type>: not added
  {ERR_PAYLOAD_TOO_LARGE, bytes, cap}          its data is over the queue's stored
                                               max_payload_bytes (Queue.configure): not added
or {ERR_WRONG_TYPE, key, type, expected_type} when a queue key holds foreign data.
A job with dedup fields (shunter.Dedup: `dedup_key`, `dedup_mode`, `dedup_ms` right after
the six fixed pairs) takes the key `<prefix>dedup:<key>` when created.
Errors: WRONG_TYPE, PAYLOAD_TOO_LARGE
Events: enqueue, dedup, debounce
]]
-- include: now_ms, queue_meta, enter_waiting, enter_scheduled, keep_seq, ms_text, dedup_hit
local k = {waiting = KEYS[1], scheduled = KEYS[2], meta = KEYS[3], events = KEYS[4],
  marker = KEYS[5], prefix = ARGV[1], maxev = ARGV[2]}

-- Foreign data under a queue key refuses the call before anything is written. Each key is
-- read with a command that refuses any other type, cheaper than TYPE (the meta hash by
-- what this call needs of it); TYPE names what was found only then.
local function foreign(key, expected, reply)
  if type(reply) == 'table' and reply.err then
    return {ERR_WRONG_TYPE, key, redis.call('TYPE', key)['ok'], expected}
  end
end
local refused = foreign(k.waiting, 'zset', redis.pcall('ZCARD', k.waiting))
  or foreign(k.scheduled, 'zset', redis.pcall('ZCARD', k.scheduled))
  or foreign(k.meta, 'hash', queue_meta(k, true))
  or foreign(k.events, 'stream', redis.pcall('XLEN', k.events))
  or foreign(k.marker, 'zset', redis.pcall('ZCARD', k.marker))
if refused then return refused end

local now = now_ms()
local out = {now}
-- numbers go as text: Redis would make the same of each, at a cost (see ms_text)
local created = ms_text(now)
-- The queue's stored payload cap, when it has one, is checked here too: a producer that
-- was started with a larger cap cannot store what the queue's workers would refuse.
local cap = tonumber(queue_meta(k)[META_MAX_PAYLOAD_BYTES])
local i = 3
while i <= #ARGV do
  local id, delay, run_at, priority = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  local group, nfields = ARGV[i + 4], tonumber(ARGV[i + 5])
  local first, last = i + 6, i + 5 + nfields
  i = last + 1
  local jobkey = k.prefix .. 'job:' .. id
  -- pcall: a key that is not a hash answers WRONGTYPE, which must not end the script
  local existing = redis.pcall('HGET', jobkey, 'state')
  local due = now + delay
  if run_at ~= '' then due = tonumber(run_at) end
  local size = 0
  if cap then
    for j = first, last - 1, 2 do
      if ARGV[j] == 'data' then size = #ARGV[j + 1] end
    end
  end
  if cap and size > cap then
    out[#out + 1] = {ERR_PAYLOAD_TOO_LARGE, size, cap}
  elseif type(existing) == 'table' then
    out[#out + 1] = {ERR_WRONG_TYPE, redis.call('TYPE', jobkey)['ok']}
  elseif existing then
    out[#out + 1] = {0, redis.call('HGETALL', jobkey)}
  elseif dedup_hit(k, out, id, now, due, first, last) then
    -- its dedup key's holder answered for it (lib/dedup_hit.lua)
  else
    if due > now then
      enter_scheduled(k, jobkey, id, due, group, {'enqueue'}, 'id', id, 'created_at', created,
        'token', '0', 'attempts_made', '0', 'stalls', '0', 'deferrals', '0',
        unpack(ARGV, first, last))
      out[#out + 1] = {1, 'scheduled', due}
    else
      enter_waiting(k, jobkey, id, priority, nil, group, {'enqueue'}, 'id', id, 'created_at', created,
        'token', '0', 'attempts_made', '0', 'stalls', '0', 'deferrals', '0',
        unpack(ARGV, first, last))
      out[#out + 1] = {1, 'waiting'}
    end
  end
end
return keep_seq(k, out)
