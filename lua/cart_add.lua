--! prelude: base, cart
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
