-- cart_view.lua: one read of everything a cart call needs (GetCart, and the first of the two
-- round trips of AddItem, UpdateItem and RemoveItem): the cart hash, and for each of its SKUs
-- (plus the SKUs passed in ARGV) the catalog's cached product and inventory's available
-- units, all as of one instant. Writes nothing.
--
-- The catalog and inventory keys are not in KEYS: which SKUs to read is only known once the
-- cart is read, here. That is fine on a standalone Redis (holdfast dev, serve with one
-- --redis-url) and impossible on a cluster, where the caller passes lookups = '0' and asks the
-- catalog and inventory instead. The key names mirror the catalog's cache (`cat:{sku}`, field
-- `p` = the encoded holdfast.catalog.v1.Product) and inventory's buckets (`inv:{B}`,
-- `inv:{B}:holds`, `inv:{B}:held`, docs/inventory-redis.md); the available units
-- are computed exactly as availability.lua does, summed over the SKU's buckets.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] lookups   '1': look the SKUs up; anything else: the cart only
-- ARGV[2..] more SKUs to look up besides the cart's lines (say the SKU being added)
--
-- Reply: {exists, {HGETALL of the cart}, {sku, payload, stocked, available, ...}}
--   exists     1 when the cart key exists, else 0 (the caller re-warms it from the store)
--   payload    the cached product, '' on a miss (no entry, or an upsert's tombstone)
--   stocked    1 when inventory's bucket 0 of the SKU exists here, else 0 (ask inventory)
--   available  units available over all buckets (>= 0); 0 when not stocked

-- ---- shared helpers (kept identical in every cart script; Redis Lua has no include) ----
-- Arguments are checked before any write so a bad call can never leave half a change.
local function is_int(n)
  return type(n) == 'number' and n == n and n == math.floor(n) and n > -2^53 and n < 2^53
end

-- Explicit formatting: Lua's default number-to-string switches to exponents past 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- Redis's clock, never the caller's: every instance agrees on updated_at and expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A line field `l:<sku>` holds `qty|unit_price_minor|currency|added_at_ms`.
local function parse_line(value)
  local qty, price, currency, at = string.match(value, '^(%d+)|(%-?%d+)|([^|]*)|(%d+)$')
  return tonumber(qty), tonumber(price), currency, tonumber(at)
end

local function format_line(qty, price, currency, at)
  return int(qty) .. '|' .. int(price) .. '|' .. currency .. '|' .. int(at)
end

local function line_fields(cart)
  local lines = {}
  for _, field in ipairs(redis.call('HKEYS', cart)) do
    if string.sub(field, 1, 2) == 'l:' then lines[#lines + 1] = field end
  end
  return lines
end

local function version_of(cart)
  return tonumber(redis.call('HGET', cart, '_v')) or 0
end

-- Every change bumps the version, stamps updated_at and gives the cart its full TTL again.
local function touch(cart, ttl_ms)
  local version = redis.call('HINCRBY', cart, '_v', 1)
  redis.call('HSET', cart, '_u', int(now_ms()))
  redis.call('PEXPIRE', cart, int(ttl_ms))
  return version
end

-- Every reply carries the whole cart as it is after the call, so the caller answers from
-- the same atomic view it changed, without a second round trip.
local function reply(cart, status, n, ...)
  return {status, n, redis.call('HGETALL', cart), ...}
end
-- The cart's version when the call may go on; else nil and the reply that ends it: 'cold'
-- for an absent key the caller has not checked the store for, 'version_conflict' when
-- expected (0 = any) is not the cart's version.
local function checked_version(cart, store_checked, expected)
  if store_checked ~= '1' and redis.call('EXISTS', cart) == 0 then
    return nil, {'cold', 0, {}}
  end
  local version = version_of(cart)
  if expected > 0 and expected ~= version then
    return nil, reply(cart, 'version_conflict', version)
  end
  return version
end

-- ---- end of shared helpers ----

-- Missing hash fields arrive as false and stored values as strings: both read as integers.
local function num(v)
  local n = tonumber(v)
  if n == nil or n ~= n then return 0 end
  return math.floor(n)
end

-- One bucket as availability.lua reads it: reserved without the lapsed, unpurged holds (at
-- most LAPSED_LIMIT of them, the same bound).
local LAPSED_LIMIT, SLICE = 1000, 500
local function bucket(tag, now)
  local inv = 'inv:{' .. tag .. '}'
  local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'buckets', 'buckets_max')
  local due = redis.call('ZRANGEBYSCORE', inv .. ':holds', '-inf', int(now), 'LIMIT', 0, LAPSED_LIMIT)
  local lapsed = 0
  for i = 1, #due, SLICE do
    local last = math.min(i + SLICE - 1, #due)
    for _, q in ipairs(redis.call('HMGET', inv .. ':held', unpack(due, i, last))) do
      lapsed = lapsed + num(q)
    end
  end
  return num(lv[1]), math.max(num(lv[2]) - lapsed, 0), num(lv[3]), num(lv[4])
end

-- stocked (1/0) and the units available summed over the SKU's buckets, as Stock::level does.
local function available(sku, now)
  if redis.call('EXISTS', 'inv:{' .. sku .. '}') == 0 then return 0, 0 end
  local on_hand, reserved, buckets, buckets_max = bucket(sku, now)
  if buckets < 1 then buckets = 1 end
  buckets_max = math.max(buckets_max, buckets)
  for i = 1, buckets_max - 1 do
    local more_on_hand, more_reserved = bucket(sku .. '~' .. int(i), now)
    on_hand, reserved = on_hand + more_on_hand, reserved + more_reserved
  end
  return 1, math.max(on_hand - reserved, 0)
end

local cart = KEYS[1]
local fields = redis.call('HGETALL', cart)
local exists = 0
if #fields > 0 then exists = 1 end
local found = {}
if ARGV[1] == '1' then
  local skus, seen = {}, {}
  local function want(sku)
    if sku ~= '' and not seen[sku] then
      seen[sku] = true
      skus[#skus + 1] = sku
    end
  end
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'l:' then want(string.sub(fields[i], 3)) end
  end
  for i = 2, #ARGV do want(ARGV[i]) end
  local now = now_ms()
  for _, sku in ipairs(skus) do
    local payload = redis.call('HGET', 'cat:{' .. sku .. '}', 'p') or ''
    local stocked, units = available(sku, now)
    found[#found + 1] = sku
    found[#found + 1] = payload
    found[#found + 1] = stocked
    found[#found + 1] = units
  end
end
return {exists, fields, found}
