-- catalog_cache_invalidate.lua: after an upsert, replace the cached product with a tombstone
-- that remembers the new version, so no slower reader can refill the cache with an older one.
-- The next read misses, loads the new row from the store and fills the cache.
--
-- On a standalone Redis it also replaces the catalog's epoch, which tells the cart that the
-- products it kept may have changed (lib/cart_view.lua; a cluster runs no cart view script,
-- and the epoch's key is in another slot, so there it is left out).
--
-- KEYS[1] entry  cat:{sku}  hash v (version), p (encoded Product; absent in a tombstone)
-- KEYS[2] epoch  cat:epoch  (optional) the catalog's epoch, replaced by ARGV[3]
-- ARGV[1] version   the version the store now holds, integer >= 0
-- ARGV[2] ttl_ms    how long the tombstone lives (the cache TTL), integer >= 1
-- ARGV[3] epoch     with KEYS[2]: a token never used before (a fresh UUID)
--
-- Reply: 1

local entry = KEYS[1]
local version, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
if version == nil or version < 0 or ttl_ms == nil or ttl_ms < 1 then
  return redis.error_reply('ERR catalog_cache_invalidate: version and ttl_ms are required')
end
if KEYS[2] ~= nil then
  if ARGV[3] == nil or ARGV[3] == '' then
    return redis.error_reply('ERR catalog_cache_invalidate: an epoch key needs a new epoch')
  end
  redis.call('SET', KEYS[2], ARGV[3])
end
local known = tonumber(redis.call('HGET', entry, 'v'))
if known and known > version then
  return 1
end
redis.call('DEL', entry)
redis.call('HSET', entry, 'v', string.format('%d', version))
redis.call('PEXPIRE', entry, string.format('%d', ttl_ms))
return 1
