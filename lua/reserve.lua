--! prelude: base, hold_index, bucket, bucket_purge
-- reserve.lua: hold `qty` units of one bucket for reservation `rid`, idempotent by rid.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
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
local held_qty, existing = hold_get(inv, holds, held, rid)
if held_qty then
  return {1, existing, on_hand, reserved}
end

local available = on_hand - reserved
if available < qty then
  return {0, math.max(available, 0)}
end

local expires_at = now + ttl_ms
reserved = reserved + qty
redis.call('HSET', inv, 'reserved', int(reserved))
hold_put(inv, holds, held, rid, qty, expires_at)
emit(inv, events, {'type', 'reserved', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now),
  'expires_at', int(expires_at)})
return {1, expires_at, on_hand, reserved}
