--! prelude: base, hold_index
-- lib/cart_view.lua: what a cart's view reads about its SKUs from the keys the catalog and
-- inventory own (a prelude, after base and bucket), for cart_view.lua and cart_add_viewed.lua.
-- STANDALONE REDIS ONLY: the keys are derived from SKUs, in other slots than the cart's. The
-- layouts read and what is left to the owning services: docs/cart.md, "The one-round-trip view".

local view_now -- Redis's clock, read only once a SKU has holds to look at
--! per call: view_call_begin
-- A new call reads the clock again (a function library keeps view_now between FCALLs).
local function view_call_begin()
  view_now = nil
end

-- Whether a bucket count read from inventory's hash leaves the SKU in one bucket (absent, 0
-- or 1). The counts inventory writes are plain integers, so the usual answers need no
-- conversion.
local function view_unsplit(count)
  return not count or count == '0' or count == '1' or num(count) <= 1
end

-- Units of `sku` available as inventory answers them, or -1 (ask inventory): a SKU split into
-- buckets, all three counters 0 or absent (what a Redis that lost the SKU shows), or a hold
-- lapsed but not purged. Nothing reserved needs no look at the holds (no hold can be lapsed).
-- One HMGET of the four fields every answer needs; `sold` and the holds' bound `hx` are read
-- only on the paths that need them (a SKU showing nothing on hand, a SKU with holds), and a
-- count of '0' or absent is taken as 0 without a conversion: a cart's view asks this for
-- every line, and the conversions of six fields were a quarter of `cart_view.lua`'s time.
local function view_available(sku)
  local inv = 'inv:{' .. sku .. '}'
  local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'buckets', 'buckets_max')
  if not (view_unsplit(lv[3]) and view_unsplit(lv[4])) then return -1 end
  local on_hand = num(lv[1])
  local reserved = 0
  if lv[2] and lv[2] ~= '0' then reserved = num(lv[2]) end
  if on_hand == 0 and reserved == 0 and num(redis.call('HGET', inv, 'sold')) == 0 then
    return -1
  end
  if reserved > 0 then
    local holds = inv .. ':holds'
    local index = hold_keys(holds)
    view_now = view_now or now_ms()
    if #hold_due(inv, index, view_now, 1) > 0
      or #redis.call('ZRANGEBYSCORE', holds, '-inf', int(view_now), 'LIMIT', 0, 1) > 0 then
      return -1
    end
  end
  return math.max(on_hand - reserved, 0)
end

-- The SKUs of a cart's HGETALL `fields` (its `l:<sku>` lines), then `extra` unless '' or one
-- of them.
local function view_skus(fields, extra)
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
  return skus
end

-- The catalog's epoch now (catalog_cache_invalidate.lua replaces it with every product it
-- invalidates), or false when there is none. A caller that kept the products it read under
-- the epoch still current may use them instead of having them read again (docs/cart.md).
local function view_epoch()
  return redis.call('GET', 'cat:epoch')
end

-- Whether the caller's copies are current: it names the catalog's epoch `epoch` (from
-- view_epoch), not '' or absent.
local function view_copies_current(epoch, callers)
  return epoch ~= false and callers ~= nil and callers ~= '' and epoch == callers
end

-- {sku, product, available, sku, ...} for `skus`, flat (each nested table of a reply costs
-- Redis a conversion of its own): product the catalog's cached encoded Product, false (a
-- miss or a tombstone: ask the catalog) or, when `current` (the caller's copies are current),
-- 1 without a read, except for `always` (the SKU being added or updated: the one most likely
-- to be new to the caller); available as view_available answers.
local function view_seen(skus, current, always)
  local seen, k = {}, 0
  for _, sku in ipairs(skus) do
    seen[k + 1] = sku
    if current and sku ~= always then
      seen[k + 2] = 1
    else
      seen[k + 2] = redis.call('HGET', 'cat:{' .. sku .. '}', 'p')
    end
    seen[k + 3] = view_available(sku)
    k = k + 3
  end
  return seen
end
