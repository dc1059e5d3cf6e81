-- The generic cell rate algorithm: a rate limit kept as one number, the theoretical
-- arrival time `tat` (unix ms, false for none yet). With `interval` ms between starts
-- (period / limit) and `burst` starts allowed at once, a start at `now` is allowed while
-- max(tat, now) - now <= (burst - 1) * interval, and each start moves tat on by one
-- interval from max(tat, now). So over any window of length W at most
-- burst + floor(W / interval) starts happen (no fixed windows: never twice the limit
-- across a boundary), and the next allowed time is exact: no polling.
-- Returns how many of `want` starts are allowed now, and the base they count from; when
-- none is, 0 and the time the next one is.
local function gcra(tat, now, interval, burst, want)
  local base = tonumber(tat) or now
  if base < now then base = now end
  local slack = (burst - 1) * interval - (base - now)
  if slack < 0 then
    local at = base - (burst - 1) * interval
    if at > now then return 0, at end
    -- Rounding: times near 1.8e12 ms keep about 1/4096 ms, so tat - now can come out a
    -- hair over a fractional interval. The next start is due now: allow exactly one (found
    -- by the property tests: saying "none, next at now" let a claim take every job, since
    -- tat never moved on).
    slack = 0
  end
  local n = math.floor(slack / interval) + 1
  if n > want then n = want end
  return n, base
end
