--! prelude: base, hold_index, bucket, bucket_purge
-- reservation_reserve.lua: the whole Reserve of a reservation with several lines, each on a
-- one-bucket SKU, in one atomic step: the record's first answer (or a conflict), else every
-- line held or none, the record written and every hold indexed for the sweeper. Standalone
-- Redis only (the record and every bucket on one node); a cluster, or a SKU split over several
-- buckets, runs reservation_claim + reserve per line + reservation_transition. The record it
-- writes is the same as theirs, so Commit, Release and Extend do not care which path made it.
-- (A one-line Reserve is reserve_single.lua or, coalesced, reserve_batch.lua.)
--
-- KEYS[1] record    res:{T}:pooled   the rid's record shard (the pooled layout)
-- KEYS[2] legacy    res:{rid}        where the record was kept before (read, moved)
-- KEYS[3+5*(i-1) ..] line i: bucket inv:{B}, holds inv:{B}:holds, held inv:{B}:held,
--                    events inv:{B}:events, expiries inv:expiries:<n> (the bucket's shard of
--                    the sweeper's index)
-- ARGV[1] rid
-- ARGV[2] ttl_ms                 hold lifetime from Redis's now, integer >= 1
-- ARGV[3] fingerprint            of the request; a repeat with another one conflicts
-- ARGV[4] retention_ms           how long a reserved record outlives its holds, integer >= 1
-- ARGV[5] rejected_retention_ms  how long a refusal's record is kept, integer >= 1
-- ARGV[6] lines                  the record's lines, JSON [["sku",qty,0],...], in line order
-- ARGV[7+3*(i-1) ..]             line i: sku, qty (integer >= 1), tag (the bucket's tag in the
--                                index); each SKU once
--
-- Reply: {"reserved", expires_at}       every line held now, until expires_at
--        {"rejected", 0, shortages}     a line lacks stock: nothing held; shortages JSON
--                                       [["sku",requested,available],...] of the short lines
--        {"conflict"}                   the id exists with another fingerprint
--        {"busy"}                       the id is `pending` under a multi-step Reserve
--        {state, expires_at, shortages} the id exists: its first answer
--        {-1, i}                        line i's bucket has no on_hand: Redis lost it (or the SKU
--                                       was never stocked); nothing written, no record. The
--                                       caller asks the durable truth.
-- Error reply `ERR ...` (nothing changed) for a bad argument, `OUTBOX_FULL ...` (nothing changed)
-- while a line's bucket has OUTBOX_LIMIT unpublished entries.

local record, legacy = KEYS[1], KEYS[2]
local rid, fp, lines = ARGV[1], ARGV[3], ARGV[6]
local ttl_ms, retention_ms, rejected_retention_ms = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = (#KEYS - 2) / 5
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_reserve: rid is empty') end
if fp == nil or fp == '' or lines == nil or lines == '' then
  return redis.error_reply('ERR reservation_reserve: fingerprint and lines are required')
end
if not is_int(ttl_ms) or ttl_ms < 1 then
  return redis.error_reply('ERR reservation_reserve: ttl_ms must be an integer >= 1')
end
if not is_int(retention_ms) or retention_ms < 1 or not is_int(rejected_retention_ms) or rejected_retention_ms < 1 then
  return redis.error_reply('ERR reservation_reserve: retention_ms and rejected_retention_ms must be integers >= 1')
end
if not is_int(n) or n < 1 or #ARGV ~= 6 + 3 * n then
  return redis.error_reply('ERR reservation_reserve: one line (5 KEYS, 3 arguments) at least, and as many KEYS as arguments')
end
-- Every line is checked before anything is written.
local items, seen = {}, {}
for i = 1, n do
  local k, at = 2 + 5 * (i - 1), 6 + 3 * (i - 1)
  local item = {inv = KEYS[k + 1], holds = KEYS[k + 2], held = KEYS[k + 3], events = KEYS[k + 4],
    expiries = KEYS[k + 5], sku = ARGV[at + 1], qty = tonumber(ARGV[at + 2]), tag = ARGV[at + 3]}
  if item.sku == '' or item.tag == '' then return redis.error_reply('ERR reservation_reserve: sku and tag are required') end
  if not is_int(item.qty) or item.qty < 1 then
    return redis.error_reply('ERR reservation_reserve: qty must be an integer >= 1')
  end
  if seen[item.inv] then return redis.error_reply('ERR reservation_reserve: each bucket once') end
  seen[item.inv] = true
  items[i] = item
end

-- An existing record is the first answer (or a conflict), exactly as reservation_claim says.
local now = now_ms()
local existing, rh = rec_get(record, legacy, rid, now)
local first = rec_answer(existing, fp)
if first then return first end

-- A bucket without on_hand is not "0 units" (see reserve_single.lua): nothing is written, the
-- truth guard decides. Back-pressure next, never trimming. Both before the first write.
for i, item in ipairs(items) do
  if redis.call('HEXISTS', item.inv, 'on_hand') == 0 then return {-1, i} end
end
for _, item in ipairs(items) do
  if outbox_full(item.events) then
    return redis.error_reply('OUTBOX_FULL reservation_reserve: the outbox of ' .. item.inv .. ' is full; retry once the bus takes it')
  end
end

local shortages = {}
for _, item in ipairs(items) do
  purge(item.inv, item.holds, item.held, item.events, item.sku, '0', now, PURGE_LIMIT, nil)
  local lv = redis.call('HMGET', item.inv, 'on_hand', 'reserved', 'sold')
  item.on_hand, item.reserved, item.sold = num(lv[1]), num(lv[2]), num(lv[3])
  local available = item.on_hand - item.reserved
  if available < item.qty then shortages[#shortages + 1] = {item.sku, item.qty, math.max(available, 0)} end
end

if #shortages > 0 then
  local encoded = cjson.encode(shortages)
  -- A refusal holds nothing: keep it only as long as a client's retries need the same answer.
  rec_put(rh, {state = 'rejected', fp = fp, lines = lines, shortages = encoded}, rejected_retention_ms)
  return {'rejected', 0, encoded}
end

local expires_at = now + ttl_ms
for _, item in ipairs(items) do
  local reserved = item.reserved + item.qty
  redis.call('HSET', item.inv, 'reserved', int(reserved))
  hold_put(item.inv, item.holds, item.held, rid, item.qty, expires_at)
  emit(item.inv, item.events, {'type', 'reserved', 'sku', item.sku, 'bucket', '0', 'ref', rid, 'qty', int(item.qty),
    'on_hand', int(item.on_hand), 'reserved', int(reserved), 'sold', int(item.sold), 'at', int(now),
    'expires_at', int(expires_at)})
  redis.call('ZADD', item.expiries, 'LT', int(expires_at), item.tag)
end
rec_put(rh, {state = 'reserved', fp = fp, lines = lines, expires_at = int(expires_at)}, ttl_ms + retention_ms)
return {'reserved', expires_at}
