-- include: clip
-- Add a failure to its event: `error_type` and `error_message` from the error the worker
-- sent (JSON {type, message, traceback}) or a script made (a table). The type is cut to 200
-- bytes and the message to 1,000, and the traceback is left out: the whole error stays in
-- the job hash, and the capped stream stays small. An error that is not such JSON adds
-- nothing (it is stored as it came, as before). Returns the event.
local function error_event(event, err)
  if type(err) == 'string' then
    local ok, decoded = pcall(cjson.decode, err)
    if not ok then return event end
    err = decoded
  end
  if type(err) ~= 'table' then return event end
  if type(err.type) == 'string' then
    event[#event + 1] = 'error_type'
    event[#event + 1] = clip(err.type, 200)
  end
  if type(err.message) == 'string' then
    event[#event + 1] = 'error_message'
    event[#event + 1] = clip(err.message, 1000)
  end
  return event
end
