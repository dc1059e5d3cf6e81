--[[ complete: active -> completed for one or many jobs (batched acks), each fenced by its
own token; then, in the same round trip, claim up to N next jobs for the same worker.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] active   KEYS[4] meta   KEYS[5] events
KEYS[6] marker    KEYS[7] failed      KEYS[8] completed
ARGV[1] key prefix   ARGV[2] max length of the event stream
ARGV[3] jobs to claim afterwards (0 = none)   ARGV[4] lease in ms   ARGV[5] worker id
ARGV[6] max scheduled jobs to promote   ARGV[7] claim request id ('' for none, see claim.lua)
ARGV[8..] triples of job id, fencing token, result as JSON
Returns {codes, jobs, next_due_ms, pending, paused}: one code per triple (1, or a negative
ErrorCode such as TOKEN_MISMATCH when another attempt owns the job); the rest as claim.
Errors: JOB_NOT_FOUND, TOKEN_MISMATCH, NOT_IN_STATE
Events: complete, promote, claim, fail
]]
-- include: now_ms, check_lease, leave_active, attempt_event, finish, trim_all, claim_jobs
-- include: keep_seq
local k = {waiting = KEYS[1], scheduled = KEYS[2], active = KEYS[3], meta = KEYS[4],
  events = KEYS[5], marker = KEYS[6], failed = KEYS[7], completed = KEYS[8], prefix = ARGV[1],
  maxev = ARGV[2], trims = {}}
local claim_count = tonumber(ARGV[3])
local now = now_ms()
local codes = {}
for i = 8, #ARGV, 3 do
  local id, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jobkey = k.prefix .. 'job:' .. id
  local code, f = check_lease(jobkey, token, 'attempts_made', 'worker', 'keep_completed',
    'group', 'dedup_key')
  if code == 0 then
    local attempts, worker, keep, group, dedup = f[3], f[4], f[5], f[6], f[7]
    leave_active(k, id, group)
    k.group = group
    -- the successful attempt counts too; written with the rest instead of an HINCRBY
    finish(k, jobkey, id, 'completed', now, keep or '-1:-1', dedup,
      attempt_event('complete', token, attempts, worker), 'settled_token', token,
      'attempts_made', string.format('%d', (tonumber(attempts) or 0) + 1), 'result', result)
    code = 1
  end
  codes[#codes + 1] = code
end
k.group = nil
trim_all(k, now)
local claimed = claim_jobs(k, claim_count, tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), now,
  ARGV[7])
return keep_seq(k, {codes, claimed[1], claimed[2], claimed[3], claimed[4]})
