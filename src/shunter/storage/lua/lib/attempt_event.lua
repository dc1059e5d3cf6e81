-- The event of a step of one attempt (claim, progress, and each way an attempt ends): the
-- verb, then the attempt's fencing token, its number and the worker that ran it, which a
-- job-history sink needs to tell attempts apart. `attempts` is attempts_made before this
-- attempt was counted, so the number is the job's `attempt` while it ran (attempts_made +
-- 1); a deferral or a rescue back to waiting does not count one, so the next claim has the
-- same number and a new token.
local function attempt_event(verb, token, attempts, worker)
  return {verb, 'token', token, 'attempt', (tonumber(attempts) or 0) + 1, 'worker', worker or ''}
end
