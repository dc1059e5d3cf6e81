--[[ promote: move scheduled jobs whose time has come to `waiting`; with ARGV[4] = 1, every
scheduled job, due or not (shunter.testing runs delayed jobs and retries at once that way).
Workers also do this inside `claim` (due jobs only); this script serves tools and tests.
KEYS[1] scheduled   KEYS[2] waiting   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix   ARGV[2] max jobs to move   ARGV[3] max length of the event stream
ARGV[4] 1: also jobs that are not due yet; 0 or absent: due jobs only
Returns the number of jobs moved.
Errors: none
Events: promote, fail
]]
-- include: promote_due, now_ms, keep_seq
local k = {scheduled = KEYS[1], waiting = KEYS[2], meta = KEYS[3], events = KEYS[4],
  marker = KEYS[5], prefix = ARGV[1], maxev = ARGV[3]}
local early = ARGV[4] == '1'
return keep_seq(k, promote_due(k, now_ms(), tonumber(ARGV[2]), early and '+inf' or nil))
