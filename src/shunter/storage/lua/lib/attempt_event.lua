-- The event of a step of one attempt (claim, progress, and each way an attempt ends): the
-- verb, then the attempt's fencing token, its number and the worker that ran it, which a
-- job-history sink needs to tell attempts apart. `attempts` is attempts_made before this
-- attempt was counted, so the number is the job's `attempt` while it ran (attempts_made +
-- 1); a deferral or a rescue back to waiting does not count one, so the next claim has the
-- same number and a new token. The number goes as text, made once for a batch in which
-- it repeats (see ms_text); a number that is not an integer goes as it is.
local attempt_of, attempt_is
local function attempt_event(verb, token, attempts, worker)
  local attempt = (tonumber(attempts) or 0) + 1
  if attempt ~= attempt_of then
    attempt_of, attempt_is = attempt, attempt
    if attempt % 1 == 0 and attempt > -9007199254740992 and attempt < 9007199254740992 then
      attempt_is = string.format('%d', attempt)
    end
  end
  return {verb, 'token', token, 'attempt', attempt_is, 'worker', worker or ''}
end
