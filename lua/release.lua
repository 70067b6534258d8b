--! prelude: base, hold_index, bucket, bucket_purge
-- release.lua: give back reservation `rid`'s hold in one bucket.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
-- KEYS[4] events  inv:{B}:events  outbox stream
-- ARGV[1] rid           reservation id to release
-- ARGV[2] sku           copied into the outbox entry only
-- ARGV[3] bucket_index  copied into the outbox entry only, integer >= 0
--
-- Reply: {1, qty}  released now
--        {0}       nothing held (never held, already released, committed, or expired; an
--                  expired hold is reported by the purge as `expired`, not `released`)

local inv, holds, held, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, sku, bucket = ARGV[1], ARGV[2], ARGV[3]
if rid == nil or rid == '' then return redis.error_reply('ERR release: rid is empty') end
if sku == nil or sku == '' then return redis.error_reply('ERR release: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR release: bucket_index must be an integer >= 0')
end

local now = now_ms()
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)

local qty = hold_del(inv, holds, held, rid)
if qty <= 0 then
  return {0}
end

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local on_hand, sold = num(lv[1]), num(lv[3])
local reserved = math.max(num(lv[2]) - qty, 0)
redis.call('HSET', inv, 'reserved', int(reserved))
emit(inv, events, {'type', 'released', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
return {1, qty}
