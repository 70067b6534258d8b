--! prelude: base, hold_index, bucket, bucket_purge
-- truth_rebuild.lua: rewrite one bucket's counters from inventory's durable truth after Redis
-- lost writes (docs/inventory-redis.md, "Durable truth").
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold/seq
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
-- KEYS[4] events  inv:{B}:events  outbox stream
-- KEYS[5] xfer    inv:{B}:xfer    hash of pending transfers out (dropped: levels are absolute)
-- ARGV[1] on_hand       the bucket's new on_hand (>= 0), or -1: exactly the units its live
--                       holds keep (a bucket other than 0)
-- ARGV[2] sold          the bucket's new sold (>= 0)
-- ARGV[3] seq_min       the sequence number is raised to at least this (the store's version)
-- ARGV[4] sku           copied into the outbox entries only
-- ARGV[5] bucket_index  copied into the outbox entries only, integer >= 0
-- ARGV[6..] rids        holds of reservations the store records as sold: dropped without
--                       an event (their units are in `sold` already)
--
-- Reply: {on_hand, reserved, sold, released_rid...}
--   Lapsed holds are purged first. If the live holds exceed on_hand, the holds expiring last
--   are released (a `released` event each) until they fit: their reservations cannot commit.
--   One `stock_set` entry (qty = on_hand after minus before) announces the new level.

local inv, holds, held, events, xfer = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local target, sold, seq_min = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sku, bucket = ARGV[4], ARGV[5]
if not is_int(target) or target < -1 then return redis.error_reply('ERR truth_rebuild: on_hand must be an integer >= -1') end
if not is_int(sold) or sold < 0 then return redis.error_reply('ERR truth_rebuild: sold must be an integer >= 0') end
if not is_int(seq_min) or seq_min < 0 then return redis.error_reply('ERR truth_rebuild: seq_min must be an integer >= 0') end
if sku == nil or sku == '' then return redis.error_reply('ERR truth_rebuild: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR truth_rebuild: bucket_index must be an integer >= 0')
end

local now = now_ms()
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)
for i = 6, #ARGV do
  hold_del(inv, holds, held, ARGV[i])
end

-- Live holds, expiring last first: the ones given up if they do not fit.
local live = hold_all(inv, holds, held)
table.sort(live, function(a, b) return a[3] > b[3] or (a[3] == b[3] and a[1] > b[1]) end)
local reserved = 0
for _, h in ipairs(live) do
  reserved = reserved + h[2]
end
local on_hand = target
if on_hand < 0 then on_hand = reserved end
local released = {}
local i = 1
while reserved > on_hand and i <= #live do
  local rid, qty = live[i][1], live[i][2]
  hold_del(inv, holds, held, rid)
  reserved = reserved - qty
  if qty > 0 then
    emit(inv, events, {'type', 'released', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
      'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
  end
  released[#released + 1] = rid
  i = i + 1
end

local old_on_hand = num(redis.call('HGET', inv, 'on_hand'))
local seq = num(redis.call('HGET', inv, 'seq'))
if seq < seq_min then redis.call('HSET', inv, 'seq', int(seq_min)) end
redis.call('HSET', inv, 'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold))
redis.call('DEL', xfer)
emit(inv, events, {'type', 'stock_set', 'sku', sku, 'bucket', bucket, 'ref', '', 'qty', int(on_hand - old_on_hand),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
local reply = {on_hand, reserved, sold}
for _, rid in ipairs(released) do reply[#reply + 1] = rid end
return reply
