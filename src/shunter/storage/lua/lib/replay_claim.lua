-- include: claim_fields, claim_reply, queue_meta
-- A claim request id makes a claim idempotent. When the connection drops after the script
-- ran, the client (redis-py's retry, or the worker's own) sends the same call again; a
-- second claim would take a second batch and leave the first in `active` with nobody
-- running it, to be rescued as stalls that can dead-letter jobs that never ran. So a claim
-- with an id records the (job, token) pairs it handed out under <prefix>claim:<id> for one
-- lease (see claim_jobs), and a claim that finds that record returns the same jobs instead
-- (those still active under the recorded token) and claims nothing new. The zset
-- <prefix>claims indexes the records (score: when they expire) so that obliterate finds
-- them; claim_jobs prunes it.
local function replay_claim(k, record, now)
  local pairs_ = cjson.decode(record)
  local jobs = {}
  for i = 1, #pairs_, 2 do
    local f = redis.pcall('HMGET', k.prefix .. 'job:' .. pairs_[i], unpack(CLAIM_FIELDS))
    if not f.err and f[F_STATE] == 'active' and f[F_TOKEN] == pairs_[i + 1] then
      f[F_ID] = pairs_[i]
      jobs[#jobs + 1] = f
    end
  end
  return claim_reply(k, jobs, queue_meta(k)[META_PAUSED] and 1 or 0, now)
end
