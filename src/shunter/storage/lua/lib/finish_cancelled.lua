-- include: finish
-- End a job cancelled (see finish). Its event says who asked and why (`by`, `reason`,
-- '' when not given): the cancel request's own words, whichever verb ends the job.
local function finish_cancelled(k, jobkey, id, now, keep, by, reason, event, ...)
  event[#event + 1] = 'by'
  event[#event + 1] = by or ''
  event[#event + 1] = 'reason'
  event[#event + 1] = reason or ''
  finish(k, jobkey, id, 'cancelled', now, keep or nil, nil, event, ...)
end
