-- adjust_stock.lua: add (or remove, with a negative delta) units of one bucket, idempotent by
-- adjustment id (for good, or for a retention the caller sets).
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   zset rid -> hold expiry (ms)
-- KEYS[3] held    inv:{B}:held    hash rid -> units held
-- KEYS[4] events  inv:{B}:events  outbox stream
-- KEYS[5] adj     inv:{B}:adj     zset adjustment id -> time applied (ms)
-- ARGV[1] adjustment_id  client-made id; a repeat (within the retention) changes nothing
-- ARGV[2] delta          signed units, integer, not 0
-- ARGV[3] sku            copied into the outbox entry only
-- ARGV[4] bucket_index   copied into the outbox entry only, integer >= 0
-- ARGV[5] retention_ms   how long ids are remembered, integer >= 0; 0 = for good (no trim)
--
-- Reply: {1, on_hand, reserved, sold}  applied
--        {2, on_hand, reserved, sold}  id seen before: nothing changed, current levels
--        {0, on_hand, reserved}        refused: on_hand + delta < reserved; nothing changed
--                                      and the id is not recorded (a later retry may apply)
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

local inv, holds, held, events, adj = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, sku, bucket = ARGV[1], ARGV[3], ARGV[4]
local delta, retention_ms = tonumber(ARGV[2]), tonumber(ARGV[5])
if id == nil or id == '' then return redis.error_reply('ERR adjust_stock: adjustment_id is empty') end
if not is_int(delta) or delta == 0 then
  return redis.error_reply('ERR adjust_stock: delta must be a non-zero integer')
end
if sku == nil or sku == '' then return redis.error_reply('ERR adjust_stock: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR adjust_stock: bucket_index must be an integer >= 0')
end
if not is_int(retention_ms) or retention_ms < 0 then
  return redis.error_reply('ERR adjust_stock: retention_ms must be an integer >= 0')
end

-- Back-pressure, never trimming: new work waits while the bus has not taken the backlog.
if outbox_full(events) then
  return redis.error_reply('OUTBOX_FULL adjust_stock: the outbox of this bucket is full; retry once the bus takes it')
end
local now = now_ms()
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)
-- A retention (if any) is enforced here, so the window stays bounded without a janitor.
if retention_ms > 0 then
  redis.call('ZREMRANGEBYSCORE', adj, '-inf', '(' .. int(now - retention_ms))
end

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
if redis.call('ZSCORE', adj, id) then
  return {2, on_hand, reserved, sold}
end
if on_hand + delta < reserved then
  return {0, on_hand, reserved}
end

on_hand = on_hand + delta
redis.call('HSET', inv, 'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold))
redis.call('ZADD', adj, int(now), id)
emit(inv, events, {'type', 'adjusted', 'sku', sku, 'bucket', bucket, 'ref', id, 'qty', int(delta),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
return {1, on_hand, reserved, sold}
