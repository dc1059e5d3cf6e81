--[[ configure_group: one group's overrides of the queue's default group limits
(`concurrency`, `rate` as given with `interval` and `burst`, `weight`; "0" means no limit
for this group) and its pause flag (`paused`), stored in its hash <prefix>gh:<group>; then
the group is placed again at once (group_place): a lifted limit or a resume lets its jobs
start, a pause or a lower limit holds them back (the claim re-checks a group it pops).
KEYS[1] meta   KEYS[2] events   KEYS[3] marker   KEYS[4] active
ARGV[1] key prefix   ARGV[2] max length of the event stream   ARGV[3] group
ARGV[4..] pairs of name and value ("" removes the override; the name "reset" with any
value removes every override first)
Returns 1.
Errors: none
Events: configure_group
]]
-- include: emit, keep_seq, group_place
local k = {meta = KEYS[1], events = KEYS[2], marker = KEYS[3], active = KEYS[4],
  prefix = ARGV[1], maxev = ARGV[2]}
local group = ARGV[3]
local gh = k.prefix .. 'gh:' .. group
local event = {'configure_group', 'group', group}
for i = 4, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'reset' then
    redis.call('HDEL', gh, 'concurrency', 'rate', 'interval', 'burst', 'weight')
  elseif value == '' then
    redis.call('HDEL', gh, name)
  else
    redis.call('HSET', gh, name, value)
  end
  event[#event + 1] = name
  event[#event + 1] = value
end
redis.call('ZADD', k.prefix .. 'groups', 'NX', '0', group)
group_place(k, group)
emit(k, event, '', '')
return keep_seq(k, 1)
