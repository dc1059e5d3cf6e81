-- What the scripts read from the queue's meta hash, in one HMGET per script call (kept in
-- k.meta_read), at the positions META_*:
--   event_seq          the number of the queue's last event (see emit)
--   max_events, max_payload_bytes   the stored caps (Queue.configure)
--   paused             the queue is paused
--   seq                the waiting line's sequence (see waiting_score)
--   concurrency        most jobs active at once across all workers (see claim_jobs)
--   flow               "1" once the queue has groups, a rate limit or a park: the fields
--                      of flow control are then read too (queue_flow), and only then
-- The two counters are counted on in k during the call and written back by keep_seq at
-- its end; a script that writes one of the other fields (configure, pause, resume) does so
-- before anything reads them. The key is k.meta, or built from the prefix as job keys are
-- when the caller does not declare it. `protected`: read with redis.pcall, so that a key
-- holding foreign data answers its error (a table with `err`) instead of ending the script
-- (enqueue refuses the call with it). Each field read costs every call on the hot path
-- (the reply becomes a Lua table): the fields of flow control stay out of this read.
local META_EVENT_SEQ, META_MAX_EVENTS, META_MAX_PAYLOAD_BYTES, META_PAUSED, META_SEQ = 1, 2, 3, 4, 5
local META_CONCURRENCY, META_FLOW = 6, 7
local function queue_meta(k, protected)
  local m = k.meta_read
  if not m then
    m = (protected and redis.pcall or redis.call)('HMGET', k.meta or k.prefix .. 'meta',
      'event_seq', 'max_events', 'max_payload_bytes', 'paused', 'seq', 'concurrency', 'flow')
    k.meta_read = m
  end
  return m
end
