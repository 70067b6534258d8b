--! prelude: base, hold_index, bucket, bucket_purge
-- adjust_stock.lua: add (or remove, with a negative delta) units of one bucket, idempotent by
-- adjustment id (for good, or for a retention the caller sets).
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
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
