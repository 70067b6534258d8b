-- catalog_cache_invalidate.lua: after an upsert, replace the cached product with a tombstone
-- that remembers the new version, so no slower reader can refill the cache with an older one.
-- The next read misses, loads the new row from the store and fills the cache.
--
-- KEYS[1] entry  cat:{sku}  hash v (version), p (encoded Product; absent in a tombstone)
-- ARGV[1] version   the version the store now holds, integer >= 0
-- ARGV[2] ttl_ms    how long the tombstone lives (the cache TTL), integer >= 1
--
-- Reply: 1

local entry = KEYS[1]
local version, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
if version == nil or version < 0 or ttl_ms == nil or ttl_ms < 1 then
  return redis.error_reply('ERR catalog_cache_invalidate: version and ttl_ms are required')
end
local known = tonumber(redis.call('HGET', entry, 'v'))
if known and known > version then
  return 1
end
redis.call('DEL', entry)
redis.call('HSET', entry, 'v', string.format('%d', version))
redis.call('PEXPIRE', entry, string.format('%d', ttl_ms))
return 1
