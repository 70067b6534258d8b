--! prelude: base, cart
-- cart_remove.lua: remove one line (RemoveItem). Removing a SKU that is not in the cart is a
-- no-op that leaves the version alone, so a retried remove changes nothing.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     '1': the caller found no durable copy, so an absent key is an
--                           empty cart; otherwise an absent key answers 'cold'
-- ARGV[2] expected_version  0 = any; else the cart's version must equal it
-- ARGV[3] sku               the SKU, non-empty
-- ARGV[4] ttl_ms            cart lifetime after this change, integer >= 1
--
-- Reply: {status, n, {HGETALL of the cart after the call}}
--   {'ok', version}                  removed, or was not there; the version after
--   {'cold', 0}                      the key is absent and ARGV[1] is not '1'; nothing written
--   {'version_conflict', version}    expected_version differs; the current version

local cart = KEYS[1]
local store_checked, sku = ARGV[1], ARGV[3]
local expected, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[4])
if not is_int(expected) or expected < 0 then return redis.error_reply('ERR cart_remove: expected_version must be an integer >= 0') end
if sku == nil or sku == '' then return redis.error_reply('ERR cart_remove: sku is empty') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR cart_remove: ttl_ms must be an integer >= 1') end

local version, answer = checked_version(cart, store_checked, expected)
if answer then return answer end
if redis.call('HDEL', cart, 'l:' .. sku) == 0 then
  return reply(cart, 'ok', version)
end
return reply(cart, 'ok', touch(cart, ttl_ms))
