-- include: num_text
-- The end of every script that carries emit (`return keep_seq(k, reply)`): the counters
-- this call moved are written back to the queue's meta hash, once: the number of its last
-- event (k.seq, see emit), the waiting line's sequence (k.wait_seq, see waiting_score),
-- and for a queue with groups the virtual time (k.vtime, see claim_groups) and the change
-- in the number of grouped jobs waiting (k.gwaiting). The event number is kept only in a
-- meta hash that exists (a queue with only scheduled jobs has none, and gets none from
-- this); a job put in line creates it, as the HINCRBY did before. Returns `reply`.
local function keep_seq(k, reply)
  local seq, wait_seq = k.seq, k.wait_seq
  local meta = k.meta or k.prefix .. 'meta'
  if seq or wait_seq then
    if wait_seq then
      if seq then
        redis.call('HSET', meta, 'seq', wait_seq, 'event_seq', seq)
      else
        redis.call('HSET', meta, 'seq', wait_seq)
      end
    elseif k.seq_kept or redis.call('EXISTS', meta) == 1 then
      redis.call('HSET', meta, 'event_seq', seq)
    end
  end
  if k.vtime then redis.call('HSET', meta, 'vtime', num_text(k.vtime)) end
  if k.gwaiting and k.gwaiting ~= 0 then redis.call('HINCRBY', meta, 'gwaiting', k.gwaiting) end
  return reply
end
