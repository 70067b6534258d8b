--! prelude: base, cart
-- cart_set_quantity.lua: set one line's quantity (UpdateItem); 0 removes the line. Raising a
-- quantity is checked against the advisory stock figure passed in; lowering never is. The
-- line keeps its price snapshot and added_at.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     '1': the caller found no durable copy, so an absent key is a new
--                           (empty) cart; otherwise an absent key answers 'cold'
-- ARGV[2] expected_version  0 = any; else the cart's version must equal it
-- ARGV[3] sku               the SKU, non-empty
-- ARGV[4] qty               the new quantity, integer 0..max_qty
-- ARGV[5] available         units inventory has available, or -1 when it could not be asked
-- ARGV[6] max_qty           most units one line may hold, integer >= 1
-- ARGV[7] ttl_ms            cart lifetime after this change, integer >= 1
--
-- Reply: {status, n, {HGETALL of the cart after the call}}
--   {'ok', version}                  set (or nothing to do: same quantity, or 0 on a missing
--                                    line); the version after
--   {'cold', 0}                      the key is absent and ARGV[1] is not '1'; nothing written
--   {'version_conflict', version}    expected_version differs; the current version
--   {'missing', 0}                   qty > 0 for a SKU not in the cart; nothing written
--   {'quantity_cap', line_qty}       qty exceeds max_qty; the line's current quantity
--   {'out_of_stock', line_qty}       a raise beyond available; the line's current quantity
--   {'stock_unknown', line_qty}      a raise while available is -1; nothing written

local cart = KEYS[1]
local store_checked, sku = ARGV[1], ARGV[3]
local expected, qty, available = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local max_qty, ttl_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
if not is_int(expected) or expected < 0 then return redis.error_reply('ERR cart_set_quantity: expected_version must be an integer >= 0') end
if sku == nil or sku == '' then return redis.error_reply('ERR cart_set_quantity: sku is empty') end
if not is_int(qty) or qty < 0 then return redis.error_reply('ERR cart_set_quantity: qty must be an integer >= 0') end
if not is_int(available) or available < -1 then return redis.error_reply('ERR cart_set_quantity: available must be an integer >= -1') end
if not is_int(max_qty) or max_qty < 1 then return redis.error_reply('ERR cart_set_quantity: max_qty must be an integer >= 1') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR cart_set_quantity: ttl_ms must be an integer >= 1') end

local version, answer = checked_version(cart, store_checked, expected)
if answer then return answer end

local field = 'l:' .. sku
local existing = redis.call('HGET', cart, field)
if not existing then
  if qty == 0 then return reply(cart, 'ok', version) end
  return reply(cart, 'missing', 0)
end
local line_qty, price, currency, added_at = parse_line(existing)
if line_qty == nil then return redis.error_reply('ERR cart_set_quantity: line ' .. field .. ' is corrupt') end
if qty == line_qty then
  return reply(cart, 'ok', version)
end
if qty == 0 then
  redis.call('HDEL', cart, field)
  return reply(cart, 'ok', touch(cart, ttl_ms))
end
if qty > max_qty then
  return reply(cart, 'quantity_cap', line_qty)
end
if qty > line_qty then
  if available < 0 then return reply(cart, 'stock_unknown', line_qty) end
  if qty > available then return reply(cart, 'out_of_stock', line_qty) end
end

redis.call('HSET', cart, field, format_line(qty, price, currency, added_at))
return reply(cart, 'ok', touch(cart, ttl_ms))
