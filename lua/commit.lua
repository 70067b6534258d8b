--! prelude: base, hold_index, bucket, bucket_purge
-- commit.lua: turn reservation `rid`'s hold in one bucket into a sale (on_hand and reserved
-- fall, sold rises).
--
-- KEYS[1] bucket  inv:{B}         hash on_hand/reserved/sold
-- KEYS[2] holds   inv:{B}:holds   holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held    the old layout's hash rid -> units (read, drained)
-- KEYS[4] events  inv:{B}:events  outbox stream
-- ARGV[1] rid           reservation id to commit
-- ARGV[2] sku           copied into the outbox entry only
-- ARGV[3] bucket_index  copied into the outbox entry only, integer >= 0
--
-- Reply: {1, qty, on_hand, reserved, sold}  committed now
--        {0}                                no hold for rid (never held, released, purged,
--                                           or already committed)
-- Other expired holds are purged, but never rid's own: the commit protocol extended it before
-- committing, so if it is still here its units were never given to anyone else.

local inv, holds, held, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, sku, bucket = ARGV[1], ARGV[2], ARGV[3]
if rid == nil or rid == '' then return redis.error_reply('ERR commit: rid is empty') end
if sku == nil or sku == '' then return redis.error_reply('ERR commit: sku is empty') end
if not is_int(tonumber(bucket)) or tonumber(bucket) < 0 then
  return redis.error_reply('ERR commit: bucket_index must be an integer >= 0')
end

local done = commit_hold(inv, holds, held, events, sku, bucket, rid, now_ms())
if not done then
  return {0}
end
return {1, done[1], done[2], done[3], done[4]}
