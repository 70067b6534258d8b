-- truth_snapshot.lua: one bucket as inventory's durable-truth check compares it with the store
-- (docs/inventory-redis.md, "Durable truth"). Read only: no writes, no purge.
--
-- KEYS[1] bucket  inv:{B}        hash on_hand/reserved/sold/seq (+ buckets on bucket 0)
-- KEYS[2] holds   inv:{B}:holds  zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held   hash rid -> units held
-- KEYS[4] xfer    inv:{B}:xfer   hash transfer id -> to_bucket:units:taken_at_ms
-- (no ARGV)
--
-- Reply: {exists, on_hand, sold, seq, buckets, buckets_max, n_holds, rid1, qty1, ..., xid1, xfer1, ...}
--   exists 0/1 (the bucket hash is there), live holds only (expiry > now) as n_holds pairs,
--   then every pending transfer out as (transfer id, recorded value) pairs.

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

local inv, holds, held, xfer = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local exists = redis.call('EXISTS', inv)
local lv = redis.call('HMGET', inv, 'on_hand', 'sold', 'seq', 'buckets', 'buckets_max')
local buckets = math.max(num(lv[4]), 1)
local reply = {exists, num(lv[1]), num(lv[2]), num(lv[3]), buckets, math.max(num(lv[5]), buckets), 0}
local live = redis.call('ZRANGEBYSCORE', holds, '(' .. int(now), '+inf')
local n = 0
-- HMGET in slices: unpack() of a huge list would overflow the Lua C stack.
local SLICE = 500
for i = 1, #live, SLICE do
  local last = math.min(i + SLICE - 1, #live)
  local qtys = redis.call('HMGET', held, unpack(live, i, last))
  for j, q in ipairs(qtys) do
    if num(q) > 0 then
      reply[#reply + 1] = live[i + j - 1]
      reply[#reply + 1] = num(q)
      n = n + 1
    end
  end
end
reply[7] = n
local pending = redis.call('HGETALL', xfer)
for i = 1, #pending do reply[#reply + 1] = pending[i] end
return reply
