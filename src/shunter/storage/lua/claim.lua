--[[ claim: take up to N waiting jobs for one worker (promoting due scheduled jobs first).
Each claimed job gets a new fencing token (per-job counter) and a lease deadline; every
later write of this attempt must present that token.
KEYS[1] waiting   KEYS[2] scheduled   KEYS[3] active   KEYS[4] meta   KEYS[5] events
KEYS[6] marker    KEYS[7] failed
ARGV[1] key prefix   ARGV[2] max jobs to claim   ARGV[3] lease in ms   ARGV[4] worker id
ARGV[5] max length of the event stream   ARGV[6] max scheduled jobs to promote
ARGV[7] claim request id ('' for none): a claim re-sent with the same id (its reply was
        lost) returns the jobs the first one handed out instead of new ones (replay_claim)
Returns {jobs, next_due_ms, pending, paused}: jobs is a list of HMGET replies of
CLAIM_FIELDS (shunter.storage.scripts; state active, new token); next_due_ms is ms until the
earliest scheduled job (-1 if none); pending is waiting + scheduled after the claim;
paused is 1 when the queue is paused.
Errors: none
Events: promote, claim, fail
]]
-- include: claim_jobs, now_ms, keep_seq
local k = {waiting = KEYS[1], scheduled = KEYS[2], active = KEYS[3], meta = KEYS[4],
  events = KEYS[5], marker = KEYS[6], failed = KEYS[7], prefix = ARGV[1], maxev = ARGV[5]}
return keep_seq(k, claim_jobs(k, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[6]),
  now_ms(), ARGV[7] or ''))
