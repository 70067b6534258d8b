-- cart_add.lua: add units of one SKU to a cart (AddItem), summing with an existing line. A new
-- line snapshots the catalog price passed in and Redis's now as added_at; an existing line
-- keeps its snapshot. Caps and the advisory stock check are settled against the line as it is
-- inside this script, so concurrent adds from two devices can never together pass a cap.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     '1': the caller found no durable copy, so an absent key is a new
--                           cart; otherwise an absent key answers 'cold' and writes nothing
-- ARGV[2] expected_version  0 = any; else the cart's version must equal it
-- ARGV[3] sku               the SKU, non-empty
-- ARGV[4] qty               units to add, integer >= 1
-- ARGV[5] unit_price_minor  the catalog price now, integer >= 0 (snapshot of a new line)
-- ARGV[6] currency          ISO-4217 code of that price
-- ARGV[7] available         units inventory has available; the line may not end above it
-- ARGV[8] max_lines         most lines a cart may hold, integer >= 1
-- ARGV[9] max_qty           most units one line may hold, integer >= 1
-- ARGV[10] ttl_ms           cart lifetime after this change, integer >= 1
--
-- Reply: {status, n, {HGETALL of the cart after the call}}
--   {'ok', version}                  added; the new version
--   {'cold', 0}                      the key is absent and ARGV[1] is not '1'; nothing written
--   {'version_conflict', version}    expected_version differs; the current version
--   {'line_cap', max_lines}          a new line would exceed max_lines; nothing written
--   {'quantity_cap', line_qty}       the line would exceed max_qty; its current quantity
--   {'out_of_stock', line_qty}       the line would exceed available; its current quantity

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

local cart = KEYS[1]
local store_checked, sku, currency = ARGV[1], ARGV[3], ARGV[6]
local expected, qty, price = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local available, max_lines, max_qty = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local ttl_ms = tonumber(ARGV[10])
if not is_int(expected) or expected < 0 then return redis.error_reply('ERR cart_add: expected_version must be an integer >= 0') end
if sku == nil or sku == '' then return redis.error_reply('ERR cart_add: sku is empty') end
if not is_int(qty) or qty < 1 then return redis.error_reply('ERR cart_add: qty must be an integer >= 1') end
if not is_int(price) or price < 0 then return redis.error_reply('ERR cart_add: unit_price_minor must be an integer >= 0') end
if currency == nil or currency == '' or string.find(currency, '|', 1, true) then
  return redis.error_reply('ERR cart_add: currency must be a code without |')
end
if not is_int(available) then return redis.error_reply('ERR cart_add: available must be an integer') end
if not is_int(max_lines) or max_lines < 1 then return redis.error_reply('ERR cart_add: max_lines must be an integer >= 1') end
if not is_int(max_qty) or max_qty < 1 then return redis.error_reply('ERR cart_add: max_qty must be an integer >= 1') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR cart_add: ttl_ms must be an integer >= 1') end

local version, answer = checked_version(cart, store_checked, expected)
if answer then return answer end

local field = 'l:' .. sku
local existing = redis.call('HGET', cart, field)
local line_qty, line_price, line_currency, added_at = 0, price, currency, nil
if existing then
  line_qty, line_price, line_currency, added_at = parse_line(existing)
  if line_qty == nil then return redis.error_reply('ERR cart_add: line ' .. field .. ' is corrupt') end
elseif #line_fields(cart) >= max_lines then
  return reply(cart, 'line_cap', max_lines)
end
local new_qty = line_qty + qty
if new_qty > max_qty then
  return reply(cart, 'quantity_cap', line_qty)
end
if new_qty > available then
  return reply(cart, 'out_of_stock', line_qty)
end

redis.call('HSET', cart, field, format_line(new_qty, line_price, line_currency, added_at or now_ms()))
return reply(cart, 'ok', touch(cart, ttl_ms))
