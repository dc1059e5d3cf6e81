-- include: queue_meta
-- Waiting order: higher priority first, FIFO within a priority (priority in [-1000, 1000];
-- 2^40 sequence numbers per band keeps every score exact in a double). The sequence is the
-- meta hash's `seq`, read with the queue's other settings (queue_meta) and counted on in
-- k.wait_seq: keep_seq writes it back once at the end of the call, instead of a HINCRBY
-- per job.
local function waiting_score(k, priority)
  local seq = (k.wait_seq or tonumber(queue_meta(k)[META_SEQ]) or 0) + 1
  k.wait_seq = seq
  return (1000 - priority) * 1099511627776 + seq
end
