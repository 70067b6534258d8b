-- sweep.lua: the sweeper's pass over one bucket: purge up to max_holds lapsed holds and say
-- when the next one lapses, so inv:expiries can be rescheduled.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held    hash rid -> units held
-- KEYS[4] events  inv:{B}:events  outbox stream
-- ARGV[1] max_holds     purge at most this many holds, integer >= 1
-- ARGV[2] sku           copied into the outbox entries only
-- ARGV[3] bucket_index  copied into the outbox entries only, integer >= 0
--
-- Reply: {expired_count, next_expiry_ms}  next_expiry_ms is the earliest remaining hold's
--        expiry, -1 when none remain; a value <= now means max_holds cut the pass short

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

local inv, holds, held, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sku, bucket = ARGV[2], ARGV[3]
local max_holds = tonumber(ARGV[1])
if not is_int(max_holds) or max_holds < 1 then
  return redis.error_reply('ERR sweep: max_holds must be an integer >= 1')
end
if sku == nil or sku == '' then return redis.error_reply('ERR sweep: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR sweep: bucket_index must be an integer >= 0')
end

local now = now_ms()
local expired = purge(inv, holds, held, events, sku, bucket, now, max_holds, nil)

local first = redis.call('ZRANGE', holds, 0, 0, 'WITHSCORES')
local next_expiry = -1
if first[2] then next_expiry = num(first[2]) end
return {expired, next_expiry}
