-- catalog_cache_fill.lua: cache-aside fill of one product after a store read, unless the cache
-- already knows a newer version. An upsert leaves a tombstone carrying the new version
-- (catalog_cache_invalidate.lua), so a reader that loaded the old row just before the upsert
-- cannot put the old price back for five minutes.
--
-- KEYS[1] entry  cat:{sku}  hash v (version), p (encoded Product), s (sellable: see ARGV[4]);
--                p and s are absent in a tombstone
-- ARGV[1] version   the version read from the store, integer >= 0
-- ARGV[2] payload   the encoded Product
-- ARGV[3] ttl_ms    cache lifetime, integer >= 1
-- ARGV[4] sellable  what the cart's one-round-trip AddItem reads (cart_add_viewed.lua):
--                   '1|<price_minor>|<currency>' for an active product, '0' for an inactive
--                   one, '' for none (the cart then asks the catalog, as on a miss)
--
-- Reply: 1 filled; 0 skipped (the cache knows a newer version)

local entry = KEYS[1]
local version, payload, ttl_ms, sellable = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
if version == nil or version < 0 or payload == nil or ttl_ms == nil or ttl_ms < 1 then
  return redis.error_reply('ERR catalog_cache_fill: version, payload and ttl_ms are required')
end
if sellable ~= '' and sellable ~= '0' and not (sellable and string.match(sellable, '^1|%d+|[^|]+$')) then
  return redis.error_reply("ERR catalog_cache_fill: sellable must be '', 0 or 1|<price_minor>|<currency>")
end
local known = tonumber(redis.call('HGET', entry, 'v'))
if known and known > version then
  return 0
end
redis.call('HSET', entry, 'v', string.format('%d', version), 'p', payload)
if sellable == '' then redis.call('HDEL', entry, 's') else redis.call('HSET', entry, 's', sellable) end
redis.call('PEXPIRE', entry, string.format('%d', ttl_ms))
return 1
