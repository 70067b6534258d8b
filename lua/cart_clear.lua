--! prelude: base, cart
-- cart_clear.lua: remove every line (ClearCart, and the session cart after MergeCarts). The
-- version and the merge markers stay: versions keep growing over an owner's whole life (the
-- durable store orders saves by them), and a marker keeps a retried merge from adding twice.
-- Clearing an empty cart is a no-op that leaves the version alone.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     '1': the caller found no durable copy, so an absent key is an
--                           empty cart; otherwise an absent key answers 'cold'
-- ARGV[2] expected_version  0 = any; else the cart's version must equal it
-- ARGV[3] ttl_ms            cart lifetime after this change, integer >= 1
--
-- Reply: {status, n, {HGETALL of the cart after the call}}
--   {'ok', version}                  cleared, or was empty; the version after
--   {'cold', 0}                      the key is absent and ARGV[1] is not '1'; nothing written
--   {'version_conflict', version}    expected_version differs; the current version

local cart = KEYS[1]
local store_checked = ARGV[1]
local expected, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
if not is_int(expected) or expected < 0 then return redis.error_reply('ERR cart_clear: expected_version must be an integer >= 0') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR cart_clear: ttl_ms must be an integer >= 1') end

local version, answer = checked_version(cart, store_checked, expected)
if answer then return answer end
local lines = line_fields(cart)
if #lines == 0 then
  return reply(cart, 'ok', version)
end
redis.call('HDEL', cart, unpack(lines))
return reply(cart, 'ok', touch(cart, ttl_ms))
