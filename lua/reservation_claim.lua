-- reservation_claim.lua: start (or resume) a Reserve for one reservation id: create its record
-- in `pending` under a lease, or report why this caller may not proceed.
--
-- KEYS[1] record  res:{rid}  hash state/lines/expires_at/shortages/lease/owner/fp
-- ARGV[1] fingerprint   fingerprint of the request; a different one under the same id conflicts
-- ARGV[2] lines         "sku:qty:bucket;..." stored on a new record
-- ARGV[3] lease_ms      how long the claimer owns the pending record, integer >= 1
-- ARGV[4] retention_ms  PEXPIRE of the record after a write (hold TTL + 24 h), integer >= 1
-- ARGV[5] owner         the claimer's token: stored with the lease; reservation_renew and the
--                       final reservation_transition check it, so a claimer that was taken
--                       over can neither renew nor finish (optional: "" stores none)
--
-- Reply: {"claimed"}                                new record, `pending`, lease taken
--        {"conflict"}                               exists with another fingerprint
--        {"busy"}                                   `pending`, another caller's lease is live
--        {"claimed", lines}                         `pending`, lease lapsed: taken over; the
--                                                   stored lines say what may already be held
--        {state, expires_at, shortages, lines}      any other state: the first answer
--                                                   (expires_at integer, 0 / "" when missing)

-- ---- shared helpers (kept identical in every script; Redis Lua has no include) ----
-- Missing hash fields arrive as false and stored values as strings: both read as integers.
local function num(v)
  local n = tonumber(v)
  if n == nil or n ~= n then return 0 end
  return math.floor(n)
end

-- Arguments are checked before any write so a bad call can never leave half a change.
local function is_int(n)
  return type(n) == 'number' and n == n and n == math.floor(n) and n > -2^53 and n < 2^53
end

-- Explicit formatting: Lua's default number-to-string switches to exponents past 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- Redis's clock, never the caller's: every service instance then agrees on what is expired.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The outbox. Every entry carries the bucket's next sequence number, kept in the bucket hash so
-- it outlives the stream (which outbox_ack deletes once empty): event ids built from it are
-- unique for good. Nothing is ever trimmed unpublished; once OUTBOX_LIMIT entries wait (the bus
-- is down), scripts that start new work refuse with an OUTBOX_FULL error reply instead.
local OUTBOX_LIMIT = 100000
local function outbox_full(events)
  return redis.call('XLEN', events) >= OUTBOX_LIMIT
end
local function emit(inv, events, fields)
  fields[#fields + 1] = 'seq'
  fields[#fields + 1] = int(redis.call('HINCRBY', inv, 'seq', 1))
  redis.call('XADD', events, '*', unpack(fields))
end
-- ---- end of shared helpers ----

local record = KEYS[1]
local fp, lines = ARGV[1], ARGV[2]
local lease_ms, retention_ms, owner = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] or ''
if fp == nil or fp == '' then return redis.error_reply('ERR reservation_claim: fingerprint is empty') end
if lines == nil then return redis.error_reply('ERR reservation_claim: lines is missing') end
if not is_int(lease_ms) or lease_ms < 1 then
  return redis.error_reply('ERR reservation_claim: lease_ms must be an integer >= 1')
end
if not is_int(retention_ms) or retention_ms < 1 then
  return redis.error_reply('ERR reservation_claim: retention_ms must be an integer >= 1')
end

local now = now_ms()
local r = redis.call('HMGET', record, 'state', 'fp', 'lease', 'expires_at', 'shortages', 'lines')
local state = r[1]

if not state then
  -- A hash without a state is no record at all: start clean rather than inherit its fields.
  redis.call('DEL', record)
  redis.call('HSET', record, 'state', 'pending', 'fp', fp, 'lines', lines, 'lease', int(now + lease_ms),
    'owner', owner)
  redis.call('PEXPIRE', record, int(retention_ms))
  return {'claimed'}
end

if r[2] ~= fp then
  return {'conflict'}
end

if state == 'pending' then
  if num(r[3]) > now then
    return {'busy'}
  end
  redis.call('HSET', record, 'lease', int(now + lease_ms), 'owner', owner)
  redis.call('PEXPIRE', record, int(retention_ms))
  return {'claimed', r[6] or ''}
end

return {state, num(r[4]), r[5] or '', r[6] or ''}
