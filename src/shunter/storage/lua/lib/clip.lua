-- `text` cut to at most `limit` bytes, ending with '…' when it was cut; the cut falls
-- between UTF-8 characters, so a reader never gets half of one.
local function clip(text, limit)
  if #text <= limit then return text end
  local cut = limit - 3  -- room for the 3 bytes of '…'
  local byte = string.byte(text, cut + 1)
  while cut > 0 and byte >= 128 and byte < 192 do  -- 10xxxxxx: inside a character
    cut = cut - 1
    byte = string.byte(text, cut + 1)
  end
  return string.sub(text, 1, cut) .. '…'
end
