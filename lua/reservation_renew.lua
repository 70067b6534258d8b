-- reservation_renew.lua: the heartbeat of a running Reserve: push its claim lease forward, only
-- while the record is still `pending` under this claimer's token. A caller whose work outlives
-- one lease keeps its claim, so no retry takes over (and holds a second time) while it lives.
--
-- KEYS[1] record  res:{rid}  hash state/lines/expires_at/shortages/lease/owner/fp
-- ARGV[1] owner     the token the caller claimed with, non-empty
-- ARGV[2] lease_ms  the lease from now, integer >= 1
--
-- Reply: {1}  renewed: the lease ends at now + lease_ms
--        {0}  not renewed: the record left `pending`, or another caller took it over

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
local owner, lease_ms = ARGV[1], tonumber(ARGV[2])
if owner == nil or owner == '' then return redis.error_reply('ERR reservation_renew: owner is empty') end
if not is_int(lease_ms) or lease_ms < 1 then
  return redis.error_reply('ERR reservation_renew: lease_ms must be an integer >= 1')
end

local r = redis.call('HMGET', record, 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= owner then
  return {0}
end
redis.call('HSET', record, 'lease', int(now_ms() + lease_ms))
return {1}
