--! prelude: base, hold_index, cart, cart_view
-- cart_add_viewed.lua: AddItem in one round trip (cart_add.lua with what it is passed read
-- here, then cart_view.lua's view of the cart after the change). The price snapshot and the
-- sellable check come from the catalog's cached entry, the stock check from inventory's
-- counters, both as cart_view.lua reads them; whatever they cannot answer exactly as the
-- catalog and inventory would is answered 'ask' and nothing is written: the service then
-- takes the two-step path (cart_view.lua, the services for the rest, cart_add.lua).
--
-- STANDALONE REDIS ONLY: besides KEYS[1] it reads keys it derives from SKUs (other slots).
-- It only reads keys the catalog and inventory own (docs/cart.md, "The one-round-trip view"):
--   catalog    cat:{<sku>}  hash s: '1|<price_minor>|<currency>' for a product that may be sold,
--              '0' for one that may not (inactive), written with p by catalog_cache_fill.lua.
--              No s (a miss, a tombstone, an entry filled before s existed) answers 'ask'.
--   inventory  inv:{<sku>}  units available as lib/cart_view.lua reads them; -1 answers 'ask'.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     as cart_add.lua
-- ARGV[2] expected_version  as cart_add.lua
-- ARGV[3] sku               the SKU, non-empty
-- ARGV[4] qty               units to add, integer >= 1
-- ARGV[5] max_lines         most lines a cart may hold, integer >= 1
-- ARGV[6] max_qty           most units one line may hold, integer >= 1
-- ARGV[7] ttl_ms            cart lifetime after this change, integer >= 1
-- ARGV[8] epoch             as cart_view.lua's ARGV[2] ('' or absent for none)
--
-- Reply: {status, n, {HGETALL of the cart after the call}, {sku, product, available, ...}, available,
--         epoch} (the view's entries and epoch as cart_view.lua answers them)
--   {'ask', 0, {}, {}, -1}           the cache cannot answer for the SKU; nothing written
--   {'not_sellable', 0, {}, {}, -1}  the cached product is inactive; nothing written
--   otherwise cart_add.lua's statuses and n, the cart after the call, cart_view.lua's entries
--   for each of its lines, and the SKU's units available that the stock check used
--   ('cold' carries no view: nothing was read).

local cart, sku = KEYS[1], ARGV[3]
if sku == nil or sku == '' then return redis.error_reply('ERR cart_add_viewed: sku is empty') end
local sellable = redis.call('HGET', 'cat:{' .. sku .. '}', 's')
if not sellable then return {'ask', 0, {}, {}, -1} end
if sellable == '0' then return {'not_sellable', 0, {}, {}, -1} end
local price, currency = string.match(sellable, '^1|(%-?%d+)|(.+)$')
if price == nil then
  return redis.error_reply('ERR cart_add_viewed: cached entry s of ' .. sku .. ' is corrupt')
end
local available = view_available(sku)
if available < 0 then return {'ask', 0, {}, {}, -1} end

local answer = add_line('cart_add_viewed', cart, ARGV[1], tonumber(ARGV[2]), sku, tonumber(ARGV[4]),
  tonumber(price), currency, available, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
if answer.err or answer[1] == 'cold' then return answer end
local epoch = view_epoch()
answer[4] = view_seen(view_skus(answer[3], ''), view_copies_current(epoch, ARGV[8]), sku)
answer[5] = available
answer[6] = epoch
return answer
