-- truth_rebuild.lua: rewrite one bucket's counters from inventory's durable truth after Redis
-- lost writes (docs/inventory-redis.md, "Durable truth").
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold/seq
-- KEYS[2] holds   inv:{B}:holds   zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held    hash rid -> units held
-- KEYS[4] events  inv:{B}:events  outbox stream
-- KEYS[5] xfer    inv:{B}:xfer    hash of pending transfers out (dropped: levels are absolute)
-- ARGV[1] on_hand       the bucket's new on_hand (>= 0), or -1: exactly the units its live
--                       holds keep (a bucket other than 0)
-- ARGV[2] sold          the bucket's new sold (>= 0)
-- ARGV[3] seq_min       the sequence number is raised to at least this (the store's version)
-- ARGV[4] sku           copied into the outbox entries only
-- ARGV[5] bucket_index  copied into the outbox entries only, integer >= 0
-- ARGV[6..] rids        holds of reservations the store records as sold: dropped without
--                       an event (their units are in `sold` already)
--
-- Reply: {on_hand, reserved, sold, released_rid...}
--   Lapsed holds are purged first. If the live holds exceed on_hand, the holds expiring last
--   are released (a `released` event each) until they fit: their reservations cannot commit.
--   One `stock_set` entry (qty = on_hand after minus before) announces the new level.

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

-- Lazy expiry: a lapsed hold must stop counting the moment anyone touches the bucket, not when
-- the sweeper gets round to it. Bounded per call so one script never blocks Redis for long.
-- `keep` is spared (commit.lua: a hold being committed was extended and must still commit).
local PURGE_LIMIT = 1000
local function purge(inv, holds, held, events, sku, bucket, now, limit, keep)
  local due = redis.call('ZRANGEBYSCORE', holds, '-inf', int(now), 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
  local on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
  local purged = 0
  for _, rid in ipairs(due) do
    if rid ~= keep then
      local qty = num(redis.call('HGET', held, rid))
      reserved = math.max(reserved - qty, 0)
      redis.call('HDEL', held, rid)
      redis.call('ZREM', holds, rid)
      -- An orphan zset entry (no units) is cleaned up silently: consumers expect qty >= 1.
      if qty > 0 then
        emit(inv, events, {'type', 'expired', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
          'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
      end
      purged = purged + 1
    end
  end
  if purged > 0 then redis.call('HSET', inv, 'reserved', int(reserved)) end
  return purged
end
-- ---- end of shared helpers ----

local inv, holds, held, events, xfer = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local target, sold, seq_min = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sku, bucket = ARGV[4], ARGV[5]
if not is_int(target) or target < -1 then return redis.error_reply('ERR truth_rebuild: on_hand must be an integer >= -1') end
if not is_int(sold) or sold < 0 then return redis.error_reply('ERR truth_rebuild: sold must be an integer >= 0') end
if not is_int(seq_min) or seq_min < 0 then return redis.error_reply('ERR truth_rebuild: seq_min must be an integer >= 0') end
if sku == nil or sku == '' then return redis.error_reply('ERR truth_rebuild: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR truth_rebuild: bucket_index must be an integer >= 0')
end

local now = now_ms()
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)
for i = 6, #ARGV do
  redis.call('HDEL', held, ARGV[i])
  redis.call('ZREM', holds, ARGV[i])
end

-- Live holds, expiring last first: the ones given up if they do not fit.
local live = redis.call('ZREVRANGE', holds, 0, -1)
local reserved = 0
local qtys = {}
for i, rid in ipairs(live) do
  qtys[i] = num(redis.call('HGET', held, rid))
  reserved = reserved + qtys[i]
end
local on_hand = target
if on_hand < 0 then on_hand = reserved end
local released = {}
local i = 1
while reserved > on_hand and i <= #live do
  local rid, qty = live[i], qtys[i]
  redis.call('HDEL', held, rid)
  redis.call('ZREM', holds, rid)
  reserved = reserved - qty
  if qty > 0 then
    emit(inv, events, {'type', 'released', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
      'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
  end
  released[#released + 1] = rid
  i = i + 1
end

local old_on_hand = num(redis.call('HGET', inv, 'on_hand'))
local seq = num(redis.call('HGET', inv, 'seq'))
if seq < seq_min then redis.call('HSET', inv, 'seq', int(seq_min)) end
redis.call('HSET', inv, 'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold))
redis.call('DEL', xfer)
emit(inv, events, {'type', 'stock_set', 'sku', sku, 'bucket', bucket, 'ref', '', 'qty', int(on_hand - old_on_hand),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
local reply = {on_hand, reserved, sold}
for _, rid in ipairs(released) do reply[#reply + 1] = rid end
return reply
