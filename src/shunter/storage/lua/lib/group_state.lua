-- include: queue_flow
-- The limits and state of one named group: its hash <prefix>gh:<group> (overrides and
-- state) over the queue's defaults for every group (queue_flow: group_concurrency,
-- group_interval, group_burst). An override of "0" means "no limit" for this group.
-- Returns {paused, conc, interval, burst, weight, tat, until_, vs} (numbers or nil).
local function group_state(k, group)
  local h = redis.call('HMGET', k.prefix .. 'gh:' .. group, 'paused', 'concurrency',
    'interval', 'burst', 'weight', 'tat', 'until', 'vs')
  local m = queue_flow(k) or {}
  local conc = tonumber(h[2] or m[FLOW_GROUP_CONCURRENCY])
  local interval = tonumber(h[3] or m[FLOW_GROUP_INTERVAL])
  if conc == 0 then conc = nil end
  if interval == 0 then interval = nil end
  return {paused = h[1], conc = conc, interval = interval,
    burst = tonumber(h[4] or m[FLOW_GROUP_BURST]) or 1, weight = tonumber(h[5]) or 1,
    tat = tonumber(h[6]), until_ = tonumber(h[7]), vs = tonumber(h[8])}
end

