-- include: waiting_score, wake, emit
-- Put a job in line: state `waiting` with the hash fields that follow `event` (one HSET),
-- an entry in the waiting index, a wake-up for an idle worker, and the move's event. `place` is the
-- score to queue at, or nil for the back of the line of its `priority`. release and rescue
-- pass the place the job was claimed from (stored by claim as `place`): it was already
-- under way, so it goes back to the head of the line. Queued behind the whole backlog
-- instead, an orphan waited for the backlog to drain, not for its lease to run out (found
-- by the fault suite's kill -9 storm: 9.6 s for a 2 s lease).
local function enter_waiting(k, jobkey, id, priority, place, event, ...)
  redis.call('HSET', jobkey, 'state', 'waiting', ...)
  redis.call('ZADD', k.waiting, place or waiting_score(k, tonumber(priority) or 0), id)
  wake(k)
  emit(k, event, id, 'waiting')
end
