--! prelude: base, hold_index, bucket, bucket_purge
-- set_stock.lua: set one bucket's absolute on_hand (admin SetStock), and on bucket 0 the SKU's
-- bucket count.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold (+ buckets on bucket 0)
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
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
