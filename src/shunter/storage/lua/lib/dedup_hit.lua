-- include: emit, enter_waiting, enter_scheduled, leave_scheduled
-- Dedup at enqueue (shunter.Dedup, docs/dedup.md). One call per job of an enqueue, after
-- the id check: false when the job is to be created (it then holds its key, if it has
-- one), true when the key's holder answered for this add, with its reply appended to
-- `out`: {2, holder id, 'dedup' or 'debounce', {field, value, ...} of the holder}.
-- The job's fields are ARGV[first..last]; build_spec puts `dedup_key`, `dedup_mode` (and
-- `dedup_ms` for a period) right after the six fixed pairs, so a job without dedup costs
-- one comparison here.
--
-- The key `<prefix>dedup:<key>` holds the holder's id (with a PX time-to-live for ttl and
-- throttle). Whether it is held is decided here, from the holder's state, not from the
-- key alone: a holder deleted by hand or by retention, or finished without the key being
-- released (by a version before dedup_release, or by a hand edit), frees it; so a key can
-- never be stranded. Each add applies its own mode:
--   throttle  held while the key exists, whatever the holder's state, even gone;
--   unique, ttl  held while the holder is waiting, scheduled or active (retries are
--             scheduled, a rescued job is waiting again: both still hold);
--   debounce  held while the holder is waiting or scheduled: the add replaces its data
--             and moves its run time to the add's own (`due`), waiting <-> scheduled;
--             an active holder does not hold, so the add creates a job that takes the key.
local function dedup_hit(k, out, id, now, due, first, last)
  if last < first + 13 or ARGV[first + 12] ~= 'dedup_key' then return false end
  local key, mode = ARGV[first + 13], ARGV[first + 15]
  local entry = k.prefix .. 'dedup:' .. key
  local holder = redis.call('GET', entry)
  if holder then
    local holderkey = k.prefix .. 'job:' .. holder
    -- pcall: foreign data under the holder's key is a holder gone, not an error
    local h = redis.pcall('HMGET', holderkey, 'state', 'dedup_key', 'priority', 'group')
    local state = not h.err and h[2] == key and h[1]
    local live = state == 'waiting' or state == 'scheduled'
    if mode == 'debounce' and live then
      local data
      for j = first, last - 1, 2 do
        if ARGV[j] == 'data' then data = ARGV[j + 1] end
      end
      local event = {'debounce', 'key', key}
      if due > now then
        if state == 'waiting' and h[4] then  -- out of its group's line
          if redis.call('ZREM', k.prefix .. 'gw:' .. h[4], holder) == 1 then
            k.gwaiting = (k.gwaiting or 0) - 1
          end
        elseif state == 'waiting' then
          redis.call('ZREM', k.waiting, holder)
        end
        enter_scheduled(k, holderkey, holder, due, h[4], event, 'data', data)
      elseif state == 'scheduled' then
        leave_scheduled(k, holder, h[4])
        redis.call('HDEL', holderkey, 'scheduled_for')  -- as promote does
        enter_waiting(k, holderkey, holder, h[3], nil, h[4], event, 'data', data)
      else  -- waiting and due now: it keeps its place in line
        redis.call('HSET', holderkey, 'data', data)
        emit(k, event, holder, state)
      end
      out[#out + 1] = {2, holder, 'debounce', redis.call('HGETALL', holderkey)}
      return true
    end
    if mode == 'throttle' or ((live or state == 'active') and mode ~= 'debounce') then
      emit(k, {'dedup', 'mode', mode, 'key', key}, holder, state or '')
      if state then
        out[#out + 1] = {2, holder, 'dedup', redis.call('HGETALL', holderkey)}
      else
        out[#out + 1] = {2, holder, 'dedup', {}}
      end
      return true
    end
  end
  if mode == 'ttl' or mode == 'throttle' then
    redis.call('SET', entry, id, 'PX', ARGV[first + 17])
  else
    redis.call('SET', entry, id)
  end
  return false
end
