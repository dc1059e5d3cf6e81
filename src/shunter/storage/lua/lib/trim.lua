-- include: delete_job
-- Retention: drop finished jobs beyond `count` or older than `age_ms` (-1 = no limit).
-- Work per call is bounded (200 per rule); every later finish trims again.
local function trim(index, prefix, now, count, age_ms)
  if age_ms >= 0 then
    local old = redis.call('ZRANGEBYSCORE', index, '-inf', now - age_ms, 'LIMIT', 0, 200)
    for _, id in ipairs(old) do delete_job(prefix, id) end
    if #old > 0 then redis.call('ZREM', index, unpack(old)) end
  end
  if count >= 0 then
    local excess = redis.call('ZCARD', index) - count
    if excess > 0 then
      if excess > 200 then excess = 200 end
      local ids = redis.call('ZRANGE', index, 0, excess - 1)
      for _, id in ipairs(ids) do delete_job(prefix, id) end
      redis.call('ZREM', index, unpack(ids))
    end
  end
end
