--! prelude: base, hold_index, bucket
-- reservation_claim.lua: start (or resume) a Reserve for one reservation id: create its record
-- in `pending` under a lease, or report why this caller may not proceed.
--
-- KEYS[1] record  res:{T}    the rid's record shard (rec_get/rec_put; T a tag of the rid's slot; `res:{T}:pooled` on standalone Redis: the pooled layout)
-- KEYS[2] legacy  res:{rid}  where the record was kept before (read, moved; optional)
-- ARGV[1] fingerprint   fingerprint of the request; a different one under the same id conflicts
-- ARGV[2] lines         "sku:qty:bucket;..." stored on a new record
-- ARGV[3] lease_ms      how long the claimer owns the pending record, integer >= 1
-- ARGV[4] retention_ms  PEXPIRE of the record after a write (hold TTL + 24 h), integer >= 1
-- ARGV[5] owner         the claimer's token: stored with the lease; reservation_renew and the
--                       final reservation_transition check it, so a claimer that was taken
--                       over can neither renew nor finish ("" stores none)
-- ARGV[6] rid           the reservation id
--
-- Reply: {"claimed"}                                new record, `pending`, lease taken
--        {"conflict"}                               exists with another fingerprint
--        {"busy"}                                   `pending`, another caller's lease is live
--        {"claimed", lines}                         `pending`, lease lapsed: taken over; the
--                                                   stored lines say what may already be held
--        {state, expires_at, shortages, lines}      any other state: the first answer
--                                                   (expires_at integer, 0 / "" when missing)

local record, legacy, rid = KEYS[1], KEYS[2], ARGV[6]
local fp, lines = ARGV[1], ARGV[2]
local lease_ms, retention_ms, owner = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] or ''
if fp == nil or fp == '' then return redis.error_reply('ERR reservation_claim: fingerprint is empty') end
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_claim: rid is empty') end
if lines == nil then return redis.error_reply('ERR reservation_claim: lines is missing') end
if not is_int(lease_ms) or lease_ms < 1 then
  return redis.error_reply('ERR reservation_claim: lease_ms must be an integer >= 1')
end
if not is_int(retention_ms) or retention_ms < 1 then
  return redis.error_reply('ERR reservation_claim: retention_ms must be an integer >= 1')
end

local now = now_ms()
local r, rh = rec_get(record, legacy, rid, now)
local state = r.state

if not state then
  -- A key without a state is no record at all: start clean rather than inherit its fields.
  rec_put(rh, {state = 'pending', fp = fp, lines = lines, lease = int(now + lease_ms), owner = owner},
    retention_ms)
  return {'claimed'}
end

if r.fp ~= fp then
  return {'conflict'}
end

if state == 'pending' then
  if num(r.lease) > now then
    return {'busy'}
  end
  r.lease, r.owner = int(now + lease_ms), owner
  rec_put(rh, r, retention_ms)
  return {'claimed', r.lines or ''}
end

return {state, num(r.expires_at), r.shortages or '', r.lines or ''}
