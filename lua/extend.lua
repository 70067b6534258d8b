--! prelude: base, hold_index, bucket, bucket_purge
-- extend.lua: move a live hold's expiry to ttl_ms from Redis's now, never earlier than it is: an
-- Extend racing a Commit must not cut the commit's longer lease short.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
-- KEYS[4] events  inv:{B}:events  outbox stream (the purge reports expired holds there)
-- ARGV[1] rid           reservation id whose hold to extend
-- ARGV[2] ttl_ms        new lifetime from now, integer >= 1
-- ARGV[3] sku           copied into `expired` outbox entries only
-- ARGV[4] bucket_index  copied into `expired` outbox entries only, integer >= 0
--
-- Reply: {1, expires_at}  live hold: its expiry now, max(stored, now + ttl_ms)
--        {0}              no live hold (an expired one is purged, never revived)

local inv, holds, held, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, sku, bucket = ARGV[1], ARGV[3], ARGV[4]
local ttl_ms = tonumber(ARGV[2])
if rid == nil or rid == '' then return redis.error_reply('ERR extend: rid is empty') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR extend: ttl_ms must be an integer >= 1') end
if sku == nil or sku == '' then return redis.error_reply('ERR extend: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR extend: bucket_index must be an integer >= 0')
end

local expires_at = extend_hold(inv, holds, held, events, sku, bucket, rid, ttl_ms, now_ms())
if not expires_at then
  return {0}
end
return {1, expires_at}
