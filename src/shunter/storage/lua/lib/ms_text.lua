-- A time in ms as the text Redis stores for it (its digits), made once for all the jobs
-- of a script call: every number handed to redis.call is turned into text anyway, and
-- Redis 7.0 does it with printf's "%.17g", about 3,000 instructions for a time, more than
-- a small write costs. A script passes the same `now` for every job, so the last one is
-- remembered. `ms` is an integer (now_ms), for which '%d' and "%.17g" give the same.
local ms_text_of, ms_text_is
local function ms_text(ms)
  if ms ~= ms_text_of then
    ms_text_of, ms_text_is = ms, string.format('%d', ms)
  end
  return ms_text_is
end
