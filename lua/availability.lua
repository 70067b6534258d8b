-- availability.lua: one bucket's levels as of Redis's now, without writing anything (safe on
-- a read replica: run it with EVALSHA_RO / EVAL_RO).
--
-- KEYS[1] bucket  inv:{B}        hash on_hand/reserved/sold (+ buckets on bucket 0)
-- KEYS[2] holds   inv:{B}:holds  zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held   hash rid -> units held
-- (no ARGV)
--
-- Reply: {on_hand, reserved_live, sold, buckets, buckets_max}
--   reserved_live = reserved minus the units of holds that have lapsed but are not purged yet
--   (at most 1000 of them per call: the rest still count until purged);
--   buckets is 1 when not stored (plain SKU, or any bucket other than 0); buckets_max is the
--   widest layout the SKU ever had (sum over that many buckets). An unknown SKU answers
--   {0, 0, 0, 1, 1}.

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

local inv, holds, held = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold', 'buckets', 'buckets_max')
local on_hand, reserved, sold, buckets = num(lv[1]), num(lv[2]), num(lv[3]), num(lv[4])
if buckets < 1 then buckets = 1 end
local buckets_max = math.max(num(lv[5]), buckets)

-- Instead of purging (a write), subtract what the purge would give back: for at most
-- LAPSED_LIMIT holds, so a read after a wave of abandoned holds stays O(limit). Lapsed holds past
-- the limit still count as reserved (a conservative answer) until a purge or the sweeper.
local LAPSED_LIMIT = 1000
local due = redis.call('ZRANGEBYSCORE', holds, '-inf', int(now), 'LIMIT', 0, LAPSED_LIMIT)
local lapsed = 0
-- HMGET in slices: unpack() of a huge list would overflow the Lua C stack.
local SLICE = 500
for i = 1, #due, SLICE do
  local last = math.min(i + SLICE - 1, #due)
  local qtys = redis.call('HMGET', held, unpack(due, i, last))
  for _, q in ipairs(qtys) do lapsed = lapsed + num(q) end
end

return {on_hand, math.max(reserved - lapsed, 0), sold, buckets, buckets_max}
