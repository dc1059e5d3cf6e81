-- include: group_state, group_block, wake, queue_flow, now_ms, num_text
-- Put a named group where it belongs after a change (its first waiting job, a freed slot,
-- resume, new limits, a due wake-up time): in the ring of groups that can start a job
-- (<prefix>gring, scored by virtual start time: see claim_groups), in the wake-up set of
-- groups blocked until a time (<prefix>gwake, scored by that time), or in neither (no
-- waiting job, paused, full: the change that ends that places it again). Idempotent. A
-- group that enters the ring starts at max(its saved start tag, the virtual time), so an
-- idle group cannot bank credit; one already there keeps its place. Wakes an idle worker
-- when the group can start a job. `g` and `block` (its group_state and group_block) may
-- come from the caller, which has them already.
local function group_place(k, group, g, block)
  local p = k.prefix
  local ring, wakes = p .. 'gring', p .. 'gwake'
  if redis.call('ZCARD', p .. 'gw:' .. group) == 0 then
    redis.call('ZREM', ring, group)
    redis.call('ZREM', wakes, group)
    return
  end
  k.now = k.now or now_ms()
  g = g or group_state(k, group)
  if block == nil then block = group_block(k, group, g, k.now) end
  if block == nil then
    local v = k.vtime or tonumber(queue_flow(k)[FLOW_VTIME]) or 0
    local start = g.vs or v
    if start < v then start = v end
    redis.call('ZADD', ring, 'NX', num_text(start), group)
    redis.call('ZREM', wakes, group)
    wake(k)
  else
    redis.call('ZREM', ring, group)
    if type(block) == 'number' then
      redis.call('ZADD', wakes, num_text(block), group)
    else
      redis.call('ZREM', wakes, group)
    end
  end
end
