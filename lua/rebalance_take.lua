--! prelude: base, hold_index, bucket, bucket_purge
-- rebalance_take.lua: first half of a hot-SKU rebalance: move up to `units` available units
-- out of this bucket and remember the transfer until the receiving bucket confirms it.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
-- KEYS[4] events  inv:{B}:events  outbox stream
-- KEYS[5] xfer    inv:{B}:xfer    hash transfer id -> "to_bucket:units:taken_at_ms", pending
-- ARGV[1] transfer_id   rebalancer-made id; a repeat while pending moves nothing more
-- ARGV[2] units         wanted units, integer >= 1
-- ARGV[3] to_bucket     receiving bucket index, integer >= 0
-- ARGV[4] sku           copied into the outbox entry only
-- ARGV[5] bucket_index  copied into the outbox entry only, integer >= 0
--
-- Reply: {moved}  units taken now, min(units, available); 0 takes and records nothing (no
--                 give, no HDEL needed). If the id is already pending in xfer: {recorded
--                 units} again and nothing changes. While SetStock fences the bucket
--                 (`fence_until` in the bucket hash is in the future) nothing is taken: {0}.
-- A full outbox (OUTBOX_LIMIT unpublished entries) moves nothing: {0}.

local inv, holds, held, events, xfer = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, sku, bucket = ARGV[1], ARGV[4], ARGV[5]
local units, to_bucket = tonumber(ARGV[2]), tonumber(ARGV[3])
if id == nil or id == '' then return redis.error_reply('ERR rebalance_take: transfer_id is empty') end
if not is_int(units) or units < 1 then
  return redis.error_reply('ERR rebalance_take: units must be an integer >= 1')
end
if not is_int(to_bucket) or to_bucket < 0 then
  return redis.error_reply('ERR rebalance_take: to_bucket must be an integer >= 0')
end
if sku == nil or sku == '' then return redis.error_reply('ERR rebalance_take: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR rebalance_take: bucket_index must be an integer >= 0')
end

-- A full outbox (the bus is down) moves nothing: a transfer is two more events, and an idle
-- unit can wait where it is.
if outbox_full(events) then
  return {0}
end
local now = now_ms()
-- Purge first: units of lapsed holds are available to move.
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)

local recorded = redis.call('HGET', xfer, id)
if recorded then
  return {num(string.match(recorded, '^%-?%d+:(%-?%d+)'))}
end

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold', 'fence_until')
local on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
-- SetStock plans absolute levels for every bucket: no unit may leave one meanwhile.
if num(lv[4]) > now then
  return {0}
end
local moved = math.min(units, math.max(on_hand - reserved, 0))
if moved <= 0 then
  return {0}
end

on_hand = on_hand - moved
redis.call('HSET', inv, 'on_hand', int(on_hand))
-- The take time bounds how long the give may still be re-driven (rebalance_give's window).
redis.call('HSET', xfer, id, int(to_bucket) .. ':' .. int(moved) .. ':' .. int(now))
-- qty is the signed change of this bucket's on_hand.
emit(inv, events, {'type', 'transfer_out', 'sku', sku, 'bucket', bucket, 'ref', id, 'qty', int(-moved),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
return {moved}
