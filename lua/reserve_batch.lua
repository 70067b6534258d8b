--! prelude: base, hold_index, bucket, bucket_purge, gcra
-- reserve_batch.lua: the one-line Reserves that queued for one bucket while the previous call
-- was in flight (the service's per-bucket batcher, standalone Redis), run in arrival order in
-- one atomic step: TIME once, purge once, counters read once and written once, the expiry
-- index touched once, one outbox entry for all the holds made (`reserved_n`, lib/bucket.lua).
-- Every item is exactly reserve_single.lua: its first answer from its record (or a conflict),
-- else hold or refuse and write the record. A rid twice in one batch, or again in a later
-- one, holds once (the first item's record answers the second).
--
-- KEYS[1] bucket    inv:{B}          hash on_hand/reserved/sold
-- KEYS[2] holds     inv:{B}:holds    holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held      inv:{B}:held     the old layout's hash rid -> units (read, drained)
-- KEYS[4] events    inv:{B}:events   outbox stream
-- KEYS[5] expiries  inv:expiries:<n> zset bucket tag -> earliest hold expiry (the bucket's shard of the sweeper's index)
-- KEYS[5+i]         res:{T}:pooled   the record shard of item i (T a tag of its rid's slot; the pooled layout)
-- KEYS[5+n+i]       res:{rid}        where item i's record was kept before (read, moved);
--                                    optional: all n or none
-- then, with admission (ARGV[9+5*n] on), two more:
--   admission:{sku:S}:reserve:tat    the SKU's Reserve GCRA clock (lib/gcra.lua, docs/admission.md)
--   admission:{sku:S}:limits         its runtime limits
-- ARGV[1] sku              outbox entries, shortage answers
-- ARGV[2] bucket_index     outbox entries, integer >= 0
-- ARGV[3] tag              the bucket's tag in the expiry index
-- ARGV[4] retention_ms     how long a reserved record outlives its hold, integer >= 1
-- ARGV[5] rejected_retention_ms  how long a refused record is kept, integer >= 1
-- ARGV[6] n                items, 1..64
-- ARGV[7] mode             'live': the usual. 'sold_out': the service's local sold-out marker
--                          stands, so the bucket is not read (no purge or counters; only
--                          whether it exists: a lost bucket answers as in 'live'): an item with
--                          a record gets its first answer, every other is refused with
--                          available 0 and the refusal recorded. Never grants.
-- ARGV[8+5*(i-1) ...] item i: rid (no control characters), qty (>= 1), ttl_ms (>= 1),
--                     fingerprint, lines (the record's JSON lines [["sku",qty,0]])
-- ARGV[8+5*n] if_missing   'lost': a bucket without on_hand answers {-1} for every item
--                          without a record (nothing written); 'empty': the durable truth says
--                          the SKU was never stocked (or there is none): refuse and record.
-- ARGV[9+5*n] optional: admission, one character per item, '1' for an item counted against
--                     the SKU's Reserve limit, '0' for one that is not (an admitted
--                     checkout's own Reserve); ARGV[10+5*n], ARGV[11+5*n] the default rate and
--                     burst (as admission_take.lua). The counted items are decided first, in
--                     order, as admission_take.lua decides that many calls: the first ones up
--                     to the limit pass, every later one is answered {"limited", retry_ms} and
--                     nothing of it is read or written (no record: its retry is a new call).
--
-- Reply: one array per item, in order, as reserve_single.lua:
--          {"reserved", expires_at} | {"rejected", 0, shortages} | {"conflict"} | {"busy"} |
--          {state, expires_at, shortages} (the first answer) | {-1} (bucket lost, see above) |
--          {"limited", retry_ms} (over the SKU's Reserve limit, see ARGV[9+5*n])
--        then {available, lapse_in}: the bucket's available units after the batch (-1 when not
--        read: sold_out mode or a lost bucket) and, when it ends empty, ms until its earliest
--        live hold lapses (-1 without one): the service's sold-out marker must not outlive it.
-- Error reply `ERR ...` (nothing changed) for a bad argument, `OUTBOX_FULL ...` (nothing
-- changed) while OUTBOX_LIMIT unpublished entries wait: the whole batch fails, callers retry.

local inv, holds, held, events, expiries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sku, bucket, tag = ARGV[1], ARGV[2], ARGV[3]
local retention_ms, rejected_retention_ms, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local mode = ARGV[7]
local bucket_n = tonumber(bucket)
local MAX_ITEMS, PER_ITEM = 64, 5
if sku == nil or sku == '' or tag == nil or tag == '' then
  return redis.error_reply('ERR reserve_batch: sku and tag are required')
end
if not is_int(bucket_n) or bucket_n < 0 then
  return redis.error_reply('ERR reserve_batch: bucket_index must be an integer >= 0')
end
if not is_int(retention_ms) or retention_ms < 1 or not is_int(rejected_retention_ms) or rejected_retention_ms < 1
  or rejected_retention_ms > REC_MAX then
  return redis.error_reply('ERR reserve_batch: retention_ms and rejected_retention_ms must be integers >= 1 (a record is kept at most ' .. REC_MAX .. ' ms)')
end
if mode ~= 'live' and mode ~= 'sold_out' then
  return redis.error_reply('ERR reserve_batch: mode must be live or sold_out')
end
local admit = is_int(n) and ARGV[9 + PER_ITEM * n]
local item_keys = #KEYS - (admit and 2 or 0)
if not is_int(n) or n < 1 or n > MAX_ITEMS or (#ARGV ~= 8 + PER_ITEM * n and #ARGV ~= 11 + PER_ITEM * n)
  or (item_keys ~= 5 + n and item_keys ~= 5 + 2 * n) then
  return redis.error_reply('ERR reserve_batch: n must be 1..64 with 5 arguments and one record key (and one legacy key) per item, and 3 arguments and 2 keys more with admission')
end
local if_missing = ARGV[8 + PER_ITEM * n]
if if_missing ~= 'lost' and if_missing ~= 'empty' then
  return redis.error_reply('ERR reserve_batch: if_missing must be lost or empty')
end
if admit and (#admit ~= n or string.find(admit, '[^01]')) then
  return redis.error_reply('ERR reserve_batch: admission must be one 0 or 1 per item')
end
local has_legacy = item_keys == 5 + 2 * n
-- Every item is checked before anything is written: a bad item fails the batch unchanged.
local items = {}
for i = 1, n do
  local at = 7 + PER_ITEM * (i - 1)
  local item = {rid = ARGV[at + 1], qty = tonumber(ARGV[at + 2]), ttl_ms = tonumber(ARGV[at + 3]),
    fp = ARGV[at + 4], lines = ARGV[at + 5], record = KEYS[5 + i], legacy = has_legacy and KEYS[5 + n + i] or nil}
  if item.rid == '' or item.fp == '' then return redis.error_reply('ERR reserve_batch: rid and fingerprint are required') end
  if string.find(item.rid, '%c') then
    return redis.error_reply('ERR reserve_batch: rid must not hold control characters')
  end
  if not is_int(item.qty) or item.qty < 1 then return redis.error_reply('ERR reserve_batch: qty must be an integer >= 1') end
  if not is_int(item.ttl_ms) or item.ttl_ms < 1 or item.ttl_ms + retention_ms > REC_MAX then
    return redis.error_reply('ERR reserve_batch: ttl_ms must be an integer >= 1, and ttl_ms + retention_ms at most ' .. REC_MAX)
  end
  items[i] = item
end

-- Admission first, as a separate admission_take.lua call before this one would decide it.
local admitted, retry_ms = n, 0
if admit then
  local _, counted = string.gsub(admit, '1', '')
  if counted > 0 then
    admitted, retry_ms = gcra_take(KEYS[item_keys + 1], KEYS[item_keys + 2], 'reserve',
      ARGV[10 + PER_ITEM * n], ARGV[11 + PER_ITEM * n], counted)
  end
end

local live = mode == 'live'
-- The clock picks the record generations (and, live, what has lapsed).
local now, on_hand, reserved, sold = now_ms(), 0, 0, 0
-- A bucket without on_hand is not "0 units": Redis may have lost it (a restart without AOF,
-- a FLUSHALL, an eviction). Never purged or written; inventory's truth guard decides. Read in
-- sold_out mode too: a marker set before the loss must not refuse what the rebuild gives back.
local lost = redis.call('HEXISTS', inv, 'on_hand') == 0
if live then
  if not lost then
    -- Back-pressure, never trimming: new work waits while the bus has not taken the backlog.
    if outbox_full(events) then
      return redis.error_reply('OUTBOX_FULL reserve_batch: the outbox of this bucket is full; retry once the bus takes it')
    end
    purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)
    local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
    on_hand, reserved, sold = num(lv[1]), num(lv[2]), num(lv[3])
  end
end
local reserved_before, earliest = reserved, nil
-- The hold counts are read once and written once per call, not per hold.
local hstate = nil
-- The holds made, for the batch's one outbox entry.
local made = {}
-- The records' counts per generation: written once, after the loop.
rec_count_defer()

local replies = {}
for i, item in ipairs(items) do
  local rid, qty = item.rid, item.qty
  local limited = false
  if admit and string.byte(admit, i) == 49 then
    limited = admitted < 1
    admitted = admitted - 1
  end
  local existing, rh, first
  if not limited then
    existing, rh = rec_get(item.record, item.legacy, rid, now)
    first = rec_answer(existing, item.fp)
  end
  if limited then
    replies[i] = {'limited', retry_ms}
  elseif first then
    replies[i] = first
  elseif lost and if_missing == 'lost' then
    replies[i] = {-1}
  else
    local available = 0
    if live and not lost then available = on_hand - reserved end
    if available < qty then
      local refusal = rec_refusal(item.fp, sku, qty, math.max(available, 0))
      -- A refusal holds nothing: keep it only as long as a client's retries need the same answer.
      rec_put(rh, refusal, rejected_retention_ms)
      replies[i] = {'rejected', 0, refusal.shortages}
    else
      local expires_at = now + item.ttl_ms
      reserved = reserved + qty
      if hstate == nil then hstate = hold_state(inv, holds) end
      hold_put(inv, holds, held, rid, qty, expires_at, hstate)
      made[#made + 1] = rid .. '\t' .. int(qty) .. '\t' .. int(expires_at)
      rec_put(rh, rec_hold(item.fp, item.lines, sku, qty, bucket_n, expires_at), item.ttl_ms + retention_ms)
      if earliest == nil or expires_at < earliest then earliest = expires_at end
      replies[i] = {'reserved', expires_at}
    end
  end
end

rec_count_flush()
if #made > 0 then emit_reserved_n(inv, events, sku, bucket, on_hand, reserved_before, sold, now, made) end
if reserved ~= reserved_before then redis.call('HSET', inv, 'reserved', int(reserved)) end
if hstate then hold_state_save(inv, hstate) end
if earliest then redis.call('ZADD', expiries, 'LT', int(earliest), tag) end
local available_after, lapse_in = -1, -1
if live and not lost then
  available_after = math.max(on_hand - reserved, 0)
  if available_after == 0 then
    local first = hold_next_expiry(inv, holds)
    if first >= 0 then lapse_in = math.max(first - now, 0) end
  end
end
replies[#replies + 1] = {available_after, lapse_in}
return replies
