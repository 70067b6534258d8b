--! prelude: base, cart
-- cart_evict_stale.lua: after the write-behind saved a cart's acknowledged state to the store,
-- drop the live copy if it is older than that state. A live version below one this service
-- acknowledged means Redis lost writes (a restart without the last writes, a failover, a
-- FLUSHALL followed by a re-warm from the older durable copy): the next read or change then
-- re-warms the cart from the store, which now holds the newer state, instead of answering
-- (or re-saving) lines that were already removed, e.g. by the clear after a checkout. A live
-- copy as new or newer (changes since the save) is kept.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] version   the version just saved to the store, integer >= 1
--
-- Reply: {status, n, {}}
--   {'evicted', live_version}  the live copy was older; deleted
--   {'current', live_version}  the live copy is as new or newer (or absent: live_version 0); kept

local cart = KEYS[1]
local saved = tonumber(ARGV[1])
if not is_int(saved) or saved < 1 then return redis.error_reply('ERR cart_evict_stale: version must be an integer >= 1') end
if redis.call('EXISTS', cart) == 0 then
  return {'current', 0, {}}
end
local live = version_of(cart)
if live < saved then
  redis.call('DEL', cart)
  return {'evicted', live, {}}
end
return {'current', live, {}}
