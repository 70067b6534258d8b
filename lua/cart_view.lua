--! prelude: base, hold_index, cart_view
-- cart_view.lua: read a cart with what its view needs about each SKU, in one round trip
-- (GetCart; the read before AddItem and UpdateItem). Writes nothing.
--
-- STANDALONE REDIS ONLY: besides KEYS[1] it reads keys it derives from the cart's SKUs, which
-- a cluster would refuse (other slots). The cart service runs it only on a standalone Redis
-- and asks the catalog and inventory over gRPC on a cluster. It only reads keys the catalog
-- and inventory own, with their layouts as documented in docs/cart.md ("The one-round-trip
-- view"); anything it cannot answer exactly as those services would, it leaves to them:
--   catalog    cat:{<sku>}  hash p (encoded Product). No p (a miss, or the tombstone an upsert
--              leaves) answers false: the service asks the catalog, which fills the cache.
--   inventory  inv:{<sku>}  hash on_hand/reserved/sold/buckets/buckets_max/hx (availability.lua,
--              bucket 0). Answered -1 (ask inventory) when the SKU is split into buckets,
--              when all three counters are 0 or absent (what a Redis that lost the SKU shows;
--              inventory then checks its durable truth), or when a hold has lapsed without
--              being purged (inventory's availability subtracts those; this script does not).
--              Otherwise on_hand - reserved, at least 0. Nothing reserved needs no look at
--              the holds (no hold can be lapsed): two reads per SKU, the cart's usual case.
--
--   catalog    cat:epoch    the catalog's epoch (replaced by every invalidation): when ARGV[2]
--              names it, the caller's copies of the products are current and none is read.
--
-- KEYS[1] cart   cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] extra  a SKU to answer for besides the cart's lines ('' for none)
-- ARGV[2] epoch  the catalog epoch the caller holds products of ('' or absent for none)
--
-- Reply: {HGETALL of the cart ({} when absent), {sku, product, available, sku, ...}, epoch}
--   (flat, three entries per SKU: each nested table costs Redis a conversion of its own)
--   product    the cached encoded Product, false, or 1 (ARGV[2] is current: use your copy;
--              the extra SKU's is read whatever the epoch)
--   available  units available, or -1 (ask inventory)
--   epoch      the catalog's epoch now, or false (none: keep no copies)

local fields = redis.call('HGETALL', KEYS[1])
local epoch = view_epoch()
return {fields, view_seen(view_skus(fields, ARGV[1]), view_copies_current(epoch, ARGV[2]), ARGV[1]), epoch}
