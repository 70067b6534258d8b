--! prelude: base, hold_index, bucket
-- rebalance_give.lua: second half of a hot-SKU rebalance: add the units taken by
-- rebalance_take to the receiving bucket, once per transfer id (the rebalancer re-drives it
-- for every id still pending in the source bucket's xfer).
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] events  inv:{B}:events  outbox stream
-- KEYS[3] xin     inv:{B}:xin     zset transfer id -> time received (ms), trimmed after 7 days
-- ARGV[1] transfer_id   the id rebalance_take recorded
-- ARGV[2] units         the units rebalance_take moved, integer >= 1
-- ARGV[3] sku           copied into the outbox entry only
-- ARGV[4] bucket_index  copied into the outbox entry only, integer >= 0
-- ARGV[5] taken_at_ms   when rebalance_take took the units (Redis ms), integer >= 0; 0 = unknown
--                       (a transfer recorded before take times existed)
--
-- Reply: {1}   units added now
--        {0}   this id was received before: nothing changed
--        {-1}  the transfer is older than the received-id window, so an earlier give may
--              have been forgotten: nothing changed (never give twice; a human reconciles)
-- No purge: adding on_hand cannot break reserved <= on_hand, and the holds are not among the
-- keys. The event's `reserved` is therefore the stored value, possibly incl. lapsed holds.

-- Received ids are kept this long; a give is only accepted for a take younger than that, so the
-- window always covers every give that can still arrive (no unit is ever given twice).
local XIN_RETENTION_MS = 7 * 24 * 3600 * 1000

local inv, events, xin = KEYS[1], KEYS[2], KEYS[3]
local id, sku, bucket = ARGV[1], ARGV[3], ARGV[4]
local units, taken_at = tonumber(ARGV[2]), tonumber(ARGV[5] or '0')
if id == nil or id == '' then return redis.error_reply('ERR rebalance_give: transfer_id is empty') end
if not is_int(units) or units < 1 then
  return redis.error_reply('ERR rebalance_give: units must be an integer >= 1')
end
if sku == nil or sku == '' then return redis.error_reply('ERR rebalance_give: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR rebalance_give: bucket_index must be an integer >= 0')
end
if not is_int(taken_at) or taken_at < 0 then
  return redis.error_reply('ERR rebalance_give: taken_at_ms must be an integer >= 0')
end

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', xin, '-inf', '(' .. int(now - XIN_RETENTION_MS))
if redis.call('ZSCORE', xin, id) then
  return {0}
end
if taken_at > 0 and now - taken_at >= XIN_RETENTION_MS then
  return {-1}
end

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local on_hand, reserved, sold = num(lv[1]) + units, num(lv[2]), num(lv[3])
redis.call('HSET', inv, 'on_hand', int(on_hand))
redis.call('ZADD', xin, int(now), id)
emit(inv, events, {'type', 'transfer_in', 'sku', sku, 'bucket', bucket, 'ref', id, 'qty', int(units),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
return {1}
