--! prelude: base, hold_index, bucket, bucket_purge
-- sweep.lua: the sweeper's pass over one bucket: purge up to max_holds lapsed holds and say
-- when the next one lapses, so inv:expiries can be rescheduled.
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
-- KEYS[4] events  inv:{B}:events  outbox stream
-- ARGV[1] max_holds     purge at most this many holds, integer >= 1
-- ARGV[2] sku           copied into the outbox entries only
-- ARGV[3] bucket_index  copied into the outbox entries only, integer >= 0
--
-- Reply: {expired_count, next_expiry_ms}  next_expiry_ms is the earliest remaining hold's
--        expiry, -1 when none remain; a value <= now means max_holds cut the pass short

local inv, holds, held, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sku, bucket = ARGV[2], ARGV[3]
local max_holds = tonumber(ARGV[1])
if not is_int(max_holds) or max_holds < 1 then
  return redis.error_reply('ERR sweep: max_holds must be an integer >= 1')
end
if sku == nil or sku == '' then return redis.error_reply('ERR sweep: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR sweep: bucket_index must be an integer >= 0')
end

local now = now_ms()
local expired = purge(inv, holds, held, events, sku, bucket, now, max_holds, nil)

return {expired, hold_next_expiry(inv, holds)}
