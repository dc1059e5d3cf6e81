--[[ promote: move scheduled jobs whose time has come to `waiting`.
Workers also do this inside `claim`; this script serves tools and tests.
KEYS[1] scheduled   KEYS[2] waiting   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix   ARGV[2] max jobs to move   ARGV[3] max length of the event stream
Returns the number of jobs moved.
Errors: none
Events: promote, fail
]]
-- include: promote_due, now_ms, keep_seq
local k = {scheduled = KEYS[1], waiting = KEYS[2], meta = KEYS[3], events = KEYS[4],
  marker = KEYS[5], prefix = ARGV[1], maxev = ARGV[3]}
return keep_seq(k, promote_due(k, now_ms(), tonumber(ARGV[2])))
