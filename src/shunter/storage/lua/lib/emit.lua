-- Append one event to the queue's capped stream (k.events, MAXLEN ~ k.maxev): `event` is
-- {verb, field, value, ...}, about job `id` ('' for the queue), whose state is now `state`.
-- The helpers that move a job call it, each for its own move (enter_waiting,
-- enter_scheduled, finish), so no script moves a job without its event or writes an event
-- without its move; otherwise only the writes that are not moves (the cancel flag,
-- progress, queue operations) do. Appended by the script that makes the change, so the
-- stream order IS the transition order.
--
-- Every event carries `seq`: the queue's events are numbered 1, 2, 3 ... with no gaps, so
-- a reader that finds a jump knows exactly how many events the capped stream dropped
-- before it read them. The counter lives in the stream itself: the first event of a script
-- call reads the seq of the stream's newest entry, and the call counts on in a local. That
-- is one read per call, where a HINCRBY per event would be a command per event (three per
-- job on the hot path: enqueue, claim, complete), and no key of its own. A stream that was
-- deleted (obliterate) or whose newest entry has no seq (written by an older version)
-- starts again at 1.
--
-- The stream's cap is the queue's stored `max_events` (Queue.configure) when it has one,
-- else the caller's k.maxev: producers and workers started with other values then cannot
-- disagree. Read once per call, with the seq.
local last_seq, stored_maxev
local function emit(k, event, id, state)
  if not last_seq then
    last_seq = 0
    local meta = k.meta or (k.prefix and k.prefix .. 'meta')
    stored_maxev = meta and redis.call('HGET', meta, 'max_events') or false
    local newest = redis.call('XREVRANGE', k.events, '+', '-', 'COUNT', 1)[1]
    if newest then
      local fields = newest[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'seq' then
          last_seq = tonumber(fields[i + 1]) or 0
          break
        end
      end
    end
  end
  last_seq = last_seq + 1
  redis.call('XADD', k.events, 'MAXLEN', '~', stored_maxev or k.maxev, '*',
    'event', event[1], 'job', id, 'state', state, 'seq', last_seq, unpack(event, 2))
end
