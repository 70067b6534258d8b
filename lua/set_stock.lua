-- set_stock.lua: set one bucket's absolute on_hand (admin SetStock), and on bucket 0 the SKU's
-- bucket count.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold (+ buckets on bucket 0)
-- KEYS[2] holds   inv:{B}:holds   zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held    hash rid -> units held
-- KEYS[4] events  inv:{B}:events  outbox stream
-- ARGV[1] on_hand       new absolute on_hand of this bucket, integer >= 0
-- ARGV[2] buckets       the SKU's bucket count, integer >= 0 (0 means 1); stored only when
--                       bucket_index = 0, ignored (may be anything) otherwise
-- ARGV[3] sku           copied into the outbox entry only
-- ARGV[4] bucket_index  integer >= 0; 0 is the bucket that owns `buckets`
-- ARGV[5] fence         the token stock_fence.lua raised on this bucket, or "" for none
--
-- Reply: {1, on_hand, reserved, sold}  set
--        {0, reserved}                 refused: on_hand < reserved (live holds); nothing set
--        {-1}                          refused: the fence is no longer this caller's or has
--                                      lapsed (a transfer may have moved units); nothing set
-- Refusing a bucket-count change while other buckets hold units is the caller's job: those
-- buckets live in other slots this script cannot see.
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
local sku, bucket = ARGV[3], ARGV[4]
local new_on_hand, bucket_index, fence = tonumber(ARGV[1]), tonumber(bucket), ARGV[5] or ''
if not is_int(new_on_hand) or new_on_hand < 0 then
  return redis.error_reply('ERR set_stock: on_hand must be an integer >= 0')
end
if sku == nil or sku == '' then return redis.error_reply('ERR set_stock: sku is empty') end
if not is_int(bucket_index) or bucket_index < 0 then
  return redis.error_reply('ERR set_stock: bucket_index must be an integer >= 0')
end
local buckets = nil
if bucket_index == 0 then
  buckets = tonumber(ARGV[2])
  if not is_int(buckets) or buckets < 0 then
    return redis.error_reply('ERR set_stock: buckets must be an integer >= 0')
  end
  buckets = math.max(buckets, 1)
end

-- Back-pressure, never trimming: new work waits while the bus has not taken the backlog.
if outbox_full(events) then
  return redis.error_reply('OUTBOX_FULL set_stock: the outbox of this bucket is full; retry once the bus takes it')
end
local now = now_ms()
if fence ~= '' then
  local f = redis.call('HMGET', inv, 'fence', 'fence_until')
  if f[1] ~= fence or num(f[2]) <= now then
    return {-1}
  end
end
-- Purge first: only live holds may block lowering the stock.
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local old_on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
if new_on_hand < reserved then
  return {0, reserved}
end

if buckets then
  -- buckets_max remembers the widest layout ever used: after shrinking, the dropped buckets
  -- keep their `sold` counts, and readers sum over buckets_max so none is lost.
  local prior = redis.call('HMGET', inv, 'buckets', 'buckets_max')
  local widest = math.max(num(prior[1]), num(prior[2]), buckets)
  redis.call('HSET', inv, 'on_hand', int(new_on_hand), 'reserved', int(reserved), 'sold', int(sold),
    'buckets', int(buckets), 'buckets_max', int(widest))
else
  redis.call('HSET', inv, 'on_hand', int(new_on_hand), 'reserved', int(reserved), 'sold', int(sold))
end
-- Absolute sets have no id of their own; `ref` stays empty and qty is the signed change.
emit(inv, events, {'type', 'stock_set', 'sku', sku, 'bucket', bucket, 'ref', '', 'qty', int(new_on_hand - old_on_hand),
  'on_hand', int(new_on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
return {1, new_on_hand, reserved, sold}
