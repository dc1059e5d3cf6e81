-- include: queue_meta
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
-- before it read them. The number of the last event is kept in the meta hash
-- (`event_seq`): the first event of a script call reads it with the queue's other settings
-- (queue_meta, one HMGET), the call counts on in k.seq, and keep_seq writes the last
-- number back once, at the end of the call: every script that carries emit ends with
-- `return keep_seq(k, reply)` (tests/test_lua_includes.py holds them to it, and the event
-- tests check the counter after every kind of call). That is a read and a write per call
-- that appends events, where a HINCRBY per event would be a command per event (three per
-- job on the hot path), and reading the newest entry's seq back from the stream instead
-- (XREVRANGE, the way before) cost about four times what the HSET does. A script must not
-- raise half-way anyway (see fail_corrupt): one that did after appending events would
-- leave the counter behind, and the next call would number its events again from there.
--
-- A queue without a meta hash (its jobs were all scheduled so far, and it was never
-- paused or configured) keeps none: the first event of a call reads the seq of the
-- stream's newest entry instead, and keep_seq writes the counter only once the meta hash
-- exists. So does a call on a meta hash without `event_seq` (written by an older version);
-- a stream whose newest entry has no seq, or no stream, starts again at 1. obliterate
-- deletes the stream and the meta hash together (a stream deleted by hand, without its
-- meta hash, goes on from the kept number).
--
-- The stream's cap is the queue's stored `max_events` (Queue.configure) when it has one,
-- else the caller's k.maxev: producers and workers started with other values then cannot
-- disagree.
local function emit(k, event, id, state)
  local seq = k.seq
  if not seq then
    local m = queue_meta(k)
    k.stored_maxev = m[META_MAX_EVENTS]
    seq = tonumber(m[META_EVENT_SEQ])
    k.seq_kept = seq ~= nil
    if not seq then
      seq = 0
      local newest = redis.call('XREVRANGE', k.events, '+', '-', 'COUNT', 1)[1]
      if newest then
        local fields = newest[2]
        for i = 1, #fields, 2 do
          if fields[i] == 'seq' then
            seq = tonumber(fields[i + 1]) or 0
            break
          end
        end
      end
    end
  end
  seq = seq + 1
  k.seq = seq
  redis.call('XADD', k.events, 'MAXLEN', '~', k.stored_maxev or k.maxev, '*',
    'event', event[1], 'job', id, 'state', state, 'seq', seq, unpack(event, 2))
end
