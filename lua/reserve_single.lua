--! prelude: base, hold_index, bucket, bucket_purge
-- reserve_single.lua: the whole Reserve of a one-line, one-bucket reservation in one atomic
-- step: claim the record, purge, hold, record the answer, index the expiry. Used when every
-- key lives on one server (standalone Redis); on a cluster the record and the bucket are on
-- different slots and Reserve runs as reservation_claim + reserve + reservation_transition.
-- The record it writes is the same as theirs, so Commit, Release and Extend do not care
-- which path made it.
--
-- KEYS[1] record    res:{T}:pooled   the rid's record shard (rec_get/rec_put; T a tag of the rid's slot; the pooled layout)
-- KEYS[2] bucket    inv:{B}          hash on_hand/reserved/sold
-- KEYS[3] holds     inv:{B}:holds    holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[4] held      inv:{B}:held     the old layout's hash rid -> units (read, drained)
-- KEYS[5] events    inv:{B}:events   outbox stream
-- KEYS[6] expiries  inv:expiries:<n> zset bucket tag -> earliest hold expiry (the bucket's shard of the sweeper's index)
-- KEYS[7] legacy    res:{rid}        where the record was kept before (read, moved; optional)
-- ARGV[1] rid            reservation id
-- ARGV[2] qty            units, integer >= 1
-- ARGV[3] ttl_ms         hold lifetime from Redis's now, integer >= 1
-- ARGV[4] sku            the SKU (outbox entries, shortage answer)
-- ARGV[5] bucket_index   always 0 here; copied into outbox entries
-- ARGV[6] fingerprint    of the request; a repeat with another one conflicts
-- ARGV[7] lines          the record's lines, JSON [["sku",qty,0]]
-- ARGV[8] retention_ms   how long the answer outlives the hold (24 h), integer >= 1
-- ARGV[9] tag            the bucket's tag in the expiry index
-- ARGV[10] rejected_retention_ms  how long a refusal's record is kept (minutes), integer >= 1
--
-- Reply: {"reserved", expires_at}            held now
--        {"rejected", 0, shortages}          not enough stock; shortages JSON [["sku",req,avail]]
--        {"conflict"}                        the id exists with another fingerprint
--        {"busy"}                            the id is `pending` under a multi-step Reserve
--        {state, expires_at, shortages}      the id exists: its first answer
--        {-1}                                the bucket has no on_hand: Redis lost it (or the
--                                            SKU was never stocked); nothing written, no record.
--                                            The caller asks the durable truth (rebuild, retry).
-- Error reply `OUTBOX_FULL ...` (nothing changed) while OUTBOX_LIMIT unpublished entries wait.

local record, inv, holds, held, events, expiries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local legacy = KEYS[7]
local rid, sku, bucket, fp, lines, tag = ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[9]
local bucket_n = tonumber(bucket)
local qty, ttl_ms, retention_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[8])
local rejected_retention_ms = tonumber(ARGV[10])
if rid == nil or rid == '' then return redis.error_reply('ERR reserve_single: rid is empty') end
if not is_int(qty) or qty < 1 then return redis.error_reply('ERR reserve_single: qty must be an integer >= 1') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR reserve_single: ttl_ms must be an integer >= 1') end
if not is_int(retention_ms) or retention_ms < 1 then
  return redis.error_reply('ERR reserve_single: retention_ms must be an integer >= 1')
end
if not is_int(rejected_retention_ms) or rejected_retention_ms < 1 then
  return redis.error_reply('ERR reserve_single: rejected_retention_ms must be an integer >= 1')
end
if sku == nil or sku == '' or fp == nil or fp == '' or tag == nil or tag == '' then
  return redis.error_reply('ERR reserve_single: sku, fingerprint and tag are required')
end
if not is_int(bucket_n) or bucket_n < 0 then
  return redis.error_reply('ERR reserve_single: bucket_index must be an integer >= 0')
end

-- An existing record is the first answer (or a conflict), exactly as reservation_claim says.
local now = now_ms()
local existing, rh = rec_get(record, legacy, rid, now)
local first = rec_answer(existing, fp)
if first then return first end

-- A bucket without on_hand is not "0 units": Redis may have lost it (a restart without AOF, a
-- FLUSHALL, an eviction). Nothing is written, not even a refusal record: inventory's truth
-- guard decides, then calls again.
if redis.call('HEXISTS', inv, 'on_hand') == 0 then
  return {-1}
end

-- Back-pressure, never trimming: new work waits while the bus has not taken the backlog.
if outbox_full(events) then
  return redis.error_reply('OUTBOX_FULL reserve_single: the outbox of this bucket is full; retry once the bus takes it')
end
purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)
local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
local on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
local available = on_hand - reserved

if available < qty then
  local refusal = rec_refusal(fp, sku, qty, math.max(available, 0))
  -- A refusal holds nothing: keep it only as long as a client's retries need the same answer.
  rec_put(rh, refusal, rejected_retention_ms)
  return {'rejected', 0, refusal.shortages}
end

local expires_at = now + ttl_ms
reserved = reserved + qty
redis.call('HSET', inv, 'reserved', int(reserved))
hold_put(inv, holds, held, rid, qty, expires_at)
emit(inv, events, {'type', 'reserved', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
  'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now),
  'expires_at', int(expires_at)})
rec_put(rh, rec_hold(fp, lines, sku, qty, bucket_n, expires_at), ttl_ms + retention_ms)
redis.call('ZADD', expiries, 'LT', int(expires_at), tag)
return {'reserved', expires_at}
