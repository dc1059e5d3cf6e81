-- include: trim
-- Trim what a batch of finishes collected in k.trims (see finish), each index once; later
-- finishes of the same script call trim at once again.
local function trim_all(k, now)
  for index, rule in pairs(k.trims) do trim(index, k.prefix, now, rule[1], rule[2]) end
  k.trims = nil
end
