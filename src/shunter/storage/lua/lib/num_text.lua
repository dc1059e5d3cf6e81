-- A number as text that reads back as the same double (times of the rate limits and the
-- virtual times of fair queueing are fractions of a ms: tostring keeps 14 digits only).
local function num_text(x)
  if x % 1 == 0 and x > -9007199254740992 and x < 9007199254740992 then
    return string.format('%d', x)
  end
  return string.format('%.17g', x)
end
