--! prelude: base
-- region_snapshot.lua: one region's ledger of one SKU read in one step (on_hand, reserved,
-- sold, placement, every transfer out and in), stamped with the next snapshot sequence
-- number and Redis's time (docs/regions.md).
--
-- KEYS[1] bucket  inv:{S}        hash on_hand/reserved/sold (bucket 0)
-- KEYS[2] region  inv:{S}:rg     hash scope/home/allocation/global_total/placement_id/snap_seq
-- KEYS[3] out     inv:{S}:rgout  hash transfer id -> "to:units:debited_at"
-- KEYS[4] in      inv:{S}:rgin   hash transfer id -> "from:units:debited_at:credited_at"
-- (no ARGV)
--
-- Reply: {on_hand, reserved, sold, scope, home, allocation, global_total, placement_id,
--         sequence, now_ms, out (flat id/value list), in (flat id/value list)}
--   scope is '' for a SKU never placed. `reserved` is the stored figure (lapsed holds not
--   yet purged still count).

-- The region outbox refuses new work past this many unpublished entries (the bus is down).
local OUTBOX_LIMIT = 100000

local inv, rg, out, inn = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local p = redis.call('HMGET', rg, 'scope', 'home', 'allocation', 'global_total', 'placement_id')
local seq = redis.call('HINCRBY', rg, 'snap_seq', 1)
return {num(lv[1]), num(lv[2]), num(lv[3]), p[1] or '', p[2] or '', num(p[3]), num(p[4]), p[5] or '',
  seq, now_ms(), redis.call('HGETALL', out), redis.call('HGETALL', inn)}
