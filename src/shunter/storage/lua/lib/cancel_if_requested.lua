-- include: now_ms, finish_cancelled
-- A cancel asked for while the attempt ran wins over running the job again (retry,
-- release): the job ends cancelled, with the event of the verb and the hash fields that
-- follow it. `requested`, `by`, `reason` are the job's cancel_requested, cancelled_by and
-- cancel_reason; `keep` its keep_failed. True when it did.
local function cancel_if_requested(k, jobkey, id, requested, by, reason, keep, event, ...)
  if not requested then return false end
  finish_cancelled(k, jobkey, id, now_ms(), keep, by, reason, event, ...)
  return true
end
