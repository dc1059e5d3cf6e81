-- include: fail_corrupt
-- Fail a job whose key holds another type (foreign data), saying which.
local function not_a_hash(k, jobkey, id, now)
  fail_corrupt(k, jobkey, id, now, 'DecodeError', 'job key holds a ' ..
    redis.call('TYPE', jobkey)['ok'] .. ', not a hash; it was not run')
end
