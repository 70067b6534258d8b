--! prelude: base, bucket
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
-- KEYS[1] cart   cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] extra  a SKU to answer for besides the cart's lines ('' for none)
--
-- Reply: {HGETALL of the cart ({} when absent), {sku, product, available, sku, ...}}
--   (flat, three entries per SKU: each nested table costs Redis a conversion of its own)
--   product    the cached encoded Product, or false
--   available  units available, or -1 (ask inventory)

local cart, extra = KEYS[1], ARGV[1]
local fields = redis.call('HGETALL', cart)
local skus, named = {}, {}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 'l:' then
    local sku = string.sub(field, 3)
    skus[#skus + 1] = sku
    named[sku] = true
  end
end
if extra ~= nil and extra ~= '' and not named[extra] then skus[#skus + 1] = extra end

local now -- Redis's clock, read only once a SKU has holds to look at
local seen, k = {}, 0
for _, sku in ipairs(skus) do
  local product = redis.call('HGET', 'cat:{' .. sku .. '}', 'p')
  local inv = 'inv:{' .. sku .. '}'
  local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold', 'buckets', 'buckets_max', 'hx')
  local on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
  local available = -1
  if math.max(num(lv[4]), num(lv[5])) <= 1 and (on_hand ~= 0 or reserved ~= 0 or sold ~= 0) then
    -- Nothing reserved: no hold, lapsed or not, to subtract (inventory answers on_hand too).
    local lapsed = false
    if reserved > 0 then
      local holds = inv .. ':holds'
      local index = hold_keys(holds)
      now = now or now_ms()
      lapsed = #hold_due(inv, index, now, 1, lv[6]) > 0
        or #redis.call('ZRANGEBYSCORE', holds, '-inf', int(now), 'LIMIT', 0, 1) > 0
    end
    if not lapsed then available = math.max(on_hand - reserved, 0) end
  end
  seen[k + 1], seen[k + 2], seen[k + 3] = sku, product, available
  k = k + 3
end
return {fields, seen}
