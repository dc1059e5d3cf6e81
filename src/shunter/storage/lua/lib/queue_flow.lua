-- include: queue_meta
-- The flow-control fields of the queue's meta hash, read (one HMGET, kept in k.flow_read)
-- only by a queue whose `flow` flag is set (see queue_meta); nil for the others, so a
-- queue without groups, rate limit or park pays nothing for them. At the positions FLOW_*:
--   grouped            "1" once the queue has had a grouped job: claims go through the
--                      ring of groups (see claim_groups)
--   vtime              the virtual time of fair queueing (the start tag last served)
--   gwaiting           grouped jobs waiting, in all groups' lines (counts, pending)
--   rate_interval, rate_burst, rate_tat   the queue-wide rate limit (see gcra)
--   until              the queue is parked until then, unix ms (RateLimited, scope queue)
--   group_concurrency, group_interval, group_burst   every group's default limits
-- vtime and gwaiting are counted on in k (k.vtime, k.gwaiting) and written back by
-- keep_seq at the end of the call.
local FLOW_GROUPED, FLOW_VTIME, FLOW_GWAITING, FLOW_RATE_INTERVAL, FLOW_RATE_BURST = 1, 2, 3, 4, 5
local FLOW_RATE_TAT, FLOW_UNTIL, FLOW_GROUP_CONCURRENCY, FLOW_GROUP_INTERVAL = 6, 7, 8, 9
local FLOW_GROUP_BURST = 10
local function queue_flow(k)
  local f = k.flow_read
  if f == nil then
    f = false
    if queue_meta(k)[META_FLOW] then
      f = redis.call('HMGET', k.meta or k.prefix .. 'meta', 'grouped', 'vtime', 'gwaiting',
        'rate_interval', 'rate_burst', 'rate_tat', 'until', 'group_concurrency',
        'group_interval', 'group_burst')
    end
    k.flow_read = f
  end
  return f or nil
end
