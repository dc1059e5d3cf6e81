-- include: finish, error_event
-- A job that cannot be handled (its key is not a hash, or a counter is not an integer) is
-- failed with the reason instead of run or skipped. A script must not raise half-way:
-- Redis does not undo what it already did, so jobs it had popped would be left in no index
-- at all, and the worker would die on the error. No retention rule is applied (the job's
-- own may be unreadable); later finishes trim the failed set as usual. It never ran, so its
-- event has no attempt.
local function fail_corrupt(k, jobkey, id, now, kind, message)
  if redis.call('TYPE', jobkey)['ok'] ~= 'hash' then
    redis.call('DEL', jobkey)  -- foreign data under our job key; the error says what it was
    redis.call('HSET', jobkey, 'id', id, 'task', '')
  end
  local err = {type = kind, message = message, traceback = ''}
  finish(k, jobkey, id, 'failed', now, '-1:-1', nil, error_event({'fail'}, err),
    'error', cjson.encode(err))
end
