--! prelude: base, hold_index, bucket, bucket_purge
-- reservation_commit.lua: commit every hold of a `committing` reservation and move its record to
-- `committed`, in one atomic step. Standalone Redis only (the record and every line's bucket are
-- on one node; a cluster runs commit.lua per line, then reservation_transition.lua). The caller
-- recorded the sales in the durable store first, as on a cluster.
--
-- KEYS[1] record    res:{T}:pooled   the rid's record shard (the pooled layout)
-- KEYS[2] legacy    res:{rid}        where the record was kept before (read, moved)
-- KEYS[3+4*(i-1) ..] line i: bucket inv:{B}, holds inv:{B}:holds, held inv:{B}:held,
--                    events inv:{B}:events
-- ARGV[1] rid
-- ARGV[2] retention_ms  PEXPIRE of the record once committed, integer >= 1
-- ARGV[3] lines         the record's lines as the caller read them ("sku:qty:bucket;..."): the
--                       KEYS were built from them, so any other lines refuse the call
-- ARGV[4+2*(i-1) ..]    line i: sku, bucket_index (>= 0)
--
-- Reply: {1, "committed", expires_at, lines, holds, levels}
--                                                     moved; `holds` committed by this call (a
--                                                     missing one was committed before: the
--                                                     lease, the record's expiry, still runs);
--                                                     `levels` per line, after the commit: {on_hand,
--                                                     reserved, sold, buckets, buckets_max} of its
--                                                     bucket, as availability.lua reads them (the
--                                                     bucket was purged first): Commit's answer
--                                                     for a SKU of one bucket
--        {0, state, expires_at, lines, 0}            refused, nothing written: the record is
--                                                     not `committing` with these lines ("" without
--                                                     a record)
--        {2, state, expires_at, lines, holds}        a hold is missing after the lease ran out:
--                                                     it may have lapsed rather than committed, so
--                                                     the record stays `committing` (the found
--                                                     ones were committed; the caller refuses to
--                                                     claim the sale)
-- Error reply `ERR ...` (nothing changed) for a bad argument.

local record, legacy = KEYS[1], KEYS[2]
local rid, retention_ms, want_lines = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n = (#KEYS - 2) / 4
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_commit: rid is empty') end
if not is_int(retention_ms) or retention_ms < 1 then
  return redis.error_reply('ERR reservation_commit: retention_ms must be an integer >= 1')
end
if want_lines == nil or want_lines == '' then return redis.error_reply('ERR reservation_commit: lines are required') end
if not is_int(n) or n < 1 or #ARGV ~= 3 + 2 * n then
  return redis.error_reply('ERR reservation_commit: one line (4 KEYS, 2 arguments) at least, and as many KEYS as arguments')
end
for i = 1, n do
  local at = 3 + 2 * (i - 1)
  if ARGV[at + 1] == '' then return redis.error_reply('ERR reservation_commit: sku is required') end
  if not is_int(tonumber(ARGV[at + 2])) or tonumber(ARGV[at + 2]) < 0 then
    return redis.error_reply('ERR reservation_commit: bucket_index must be an integer >= 0')
  end
end

local now = now_ms()
local r, rh = rec_get(record, legacy, rid, now)
local state, expires_at, lines = r.state or '', num(r.expires_at), r.lines or ''
if state ~= 'committing' or lines ~= want_lines then
  return {0, state, expires_at, lines, 0}
end

local committed, missing = 0, 0
for i = 1, n do
  local k, at = 2 + 4 * (i - 1), 3 + 2 * (i - 1)
  if commit_hold(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], ARGV[at + 1], ARGV[at + 2], rid, now) then
    committed = committed + 1
  else
    missing = missing + 1
  end
end
if missing > 0 and now > expires_at then
  return {2, state, expires_at, lines, committed}
end

r.state = 'committed'
r.lease, r.owner = nil, nil
rec_put(rh, r, retention_ms)
local levels = {}
for i = 1, n do
  local lv = redis.call('HMGET', KEYS[3 + 4 * (i - 1)], 'on_hand', 'reserved', 'sold', 'buckets', 'buckets_max')
  local buckets = math.max(num(lv[4]), 1)
  levels[i] = {num(lv[1]), num(lv[2]), num(lv[3]), buckets, math.max(num(lv[5]), buckets)}
end
return {1, 'committed', expires_at, lines, committed, levels}
