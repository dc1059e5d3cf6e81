-- include: queue_meta, wake, group_place
-- Take a job out of the active index: the first step, and the FIRST WRITE, of every script
-- that ends an attempt (complete, retry, fail, abort, release, rescue).
--
-- Memory: under maxmemory with noeviction, Redis refuses a script whose first write may
-- grow memory (HSET, ZADD, XADD, SET ...) and lets a script that has already written run to
-- its end. Starting with this ZREM, the transitions of a job a worker holds still settle
-- when memory is full, while producers are refused with a clear error. (Found by the fault
-- suite's out-of-memory scenario: retries were refused, leases lapsed and the jobs ran
-- twice.) renew keeps the same rule with its own ZREM.
--
-- The move that follows (enter_waiting, enter_scheduled, finish) writes the new state.
-- When a worker settles its attempt, the move's fields include its token as
-- `settled_token`, so a worker whose reply was lost can tell "my write landed" from "my
-- lease was lost" (rescue, where no worker settles, writes none).
--
-- Slots: a queue with a concurrency limit (claim_jobs) has one slot more once a job leaves
-- active, and so has the job's `group` (its active set <prefix>ga:<group>, which this
-- SREM leaves: a stale attempt cannot free a slot twice, since only the attempt that
-- holds the lease gets here, and a second SREM finds nothing). Idle workers are woken to
-- take the slot; a group with waiting jobs that is out of the ring (it was full, or its
-- limits changed while it was) is placed again (group_place: one ZSCORE for a group that
-- is in the ring already). Every way out of active passes here, rescue of a dead worker's
-- job included, so no slot is ever held by a job that is not active, and nothing needs
-- repair after a kill -9.
local function leave_active(k, id, group)
  redis.call('ZREM', k.active, id)
  if queue_meta(k)[META_CONCURRENCY] then wake(k) end
  if group and group ~= '' and redis.call('SREM', k.prefix .. 'ga:' .. group, id) == 1
      and not redis.call('ZSCORE', k.prefix .. 'gring', group) then
    group_place(k, group)
  end
end
