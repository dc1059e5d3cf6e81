--[[ promote: move scheduled jobs whose time has come to `waiting`.
Workers also do this inside `claim`; this script serves tools and tests.
KEYS[1] scheduled   KEYS[2] waiting   KEYS[3] meta   KEYS[4] events   KEYS[5] marker
ARGV[1] key prefix   ARGV[2] max jobs to move   ARGV[3] max length of the event stream
Returns the number of jobs moved.
]]
local scheduled, waiting, meta, events, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, limit, maxev = ARGV[1], tonumber(ARGV[2]), ARGV[3]
return promote_due(scheduled, waiting, meta, events, marker, maxev, prefix, now_ms(), limit)
