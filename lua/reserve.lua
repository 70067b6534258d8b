-- reserve.lua: hold `qty` units of one bucket for reservation `rid`, idempotent by rid.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held    hash rid -> units held
-- KEYS[4] events  inv:{B}:events  outbox stream
-- ARGV[1] rid           reservation id; a repeat while the hold is live holds nothing new
-- ARGV[2] qty           units to hold, integer >= 1
-- ARGV[3] ttl_ms        hold lifetime from Redis's now, integer >= 1
-- ARGV[4] sku           copied into the outbox entry only
-- ARGV[5] bucket_index  copied into the outbox entry only, integer >= 0
--
-- Reply: {1, expires_at, on_hand, reserved}  held now, or already held (the existing expiry)
--        {0, available}                       not enough stock; nothing written but the purge
--        {-1}                                 the bucket has no on_hand: Redis lost it (or the
--                                             SKU was never stocked); nothing written. The caller
--                                             asks the durable truth (rebuild, retry once).
-- Error reply `OUTBOX_FULL ...` (nothing changed) while OUTBOX_LIMIT unpublished entries wait.

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
local rid, sku, bucket = ARGV[1], ARGV[4], ARGV[5]
local qty, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
if rid == nil or rid == '' then return redis.error_reply('ERR reserve: rid is empty') end
if not is_int(qty) or qty < 1 then return redis.error_reply('ERR reserve: qty must be an integer >= 1') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR reserve: ttl_ms must be an integer >= 1') end
if sku == nil or sku == '' then return redis.error_reply('ERR reserve: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR reserve: bucket_index must be an integer >= 0')
end

-- A bucket without on_hand is not "0 units": Redis may have lost it (a restart without AOF, a
-- FLUSHALL, an eviction). Nothing is written; inventory's truth guard decides.
if redis.call('HEXISTS', inv, 'on_hand') == 0 then
  return {-1}
end

-- Back-pressure, never trimming: new work waits while the bus has not taken the backlog.
if outbox_full(events) then
  return redis.error_reply('OUTBOX_FULL reserve: the outbox of this bucket is full; retry once the bus takes it')
end
local now = now_ms()
-- Purging first also settles a retry of an expired rid: it is gone, so it may hold anew.
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])

-- After the purge any hold still in the zset is live: answer the first answer again.
local existing = redis.call('ZSCORE', holds, rid)
if existing then
  return {1, num(existing), on_hand, reserved}
end

local available = on_hand - reserved
if available < qty then
  return {0, math.max(available, 0)}
end

local expires_at = now + ttl_ms
reserved = reserved + qty
redis.call('HSET', inv, 'reserved', int(reserved))
redis.call('HSET', held, rid, int(qty))
redis.call('ZADD', holds, int(expires_at), rid)
emit(inv, events, {'type', 'reserved', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now),
  'expires_at', int(expires_at)})
return {1, expires_at, on_hand, reserved}
