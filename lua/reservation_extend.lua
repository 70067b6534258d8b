--! prelude: base, hold_index, bucket, bucket_purge
-- reservation_extend.lua: extend every hold of a reservation and move its record, in one atomic
-- step. Standalone Redis only (the record and every line's bucket are on one node; a cluster
-- runs extend.lua per line between two reservation_transition.lua calls). Extend uses it
-- (reserved -> reserved, the record's expiry the earliest hold's) and so does Commit's lease
-- (preparing -> committing, or straight from reserved when the caller knows the lines without
-- reading the record): one call where those took one per line and a transition.
--
-- KEYS[1] record    res:{T}:pooled   the rid's record shard (the pooled layout)
-- KEYS[2] legacy    res:{rid}        where the record was kept before (read, moved)
-- KEYS[3+5*(i-1) ..] line i: bucket inv:{B}, holds inv:{B}:holds, held inv:{B}:held,
--                    events inv:{B}:events, expiries inv:expiries:<n> (the bucket's shard of
--                    the sweeper's index)
-- ARGV[1] rid
-- ARGV[2] from_state    'reserved' or 'preparing'
-- ARGV[3] to_state      'reserved' or 'committing' from reserved, 'committing' from preparing
-- ARGV[4] ttl_ms        each hold's new lifetime from now, integer >= 1 (never shortened)
-- ARGV[5] retention_ms  PEXPIRE of the record after the move, integer >= 1
-- ARGV[6] require_live  1: refuse unless the record's stored expiry is in the future; 0: no check
-- ARGV[7] lines         the record's lines as the caller read them ("sku:qty:bucket;..."): the
--                       KEYS were built from them, so any other lines refuse the call
-- ARGV[8+3*(i-1) ..]    line i: sku, bucket_index (>= 0), tag (the bucket's tag in the index)
--
-- Reply: {1, to_state, expires_at, lines}  every hold extended, the record moved; expires_at
--                                          is the earliest hold's expiry, now the record's
--        {0, state, expires_at, lines}     refused, nothing written: the record is not in
--                                          from_state with these lines ("" without a
--                                          record), or require_live and it lapsed
--        {2, state, expires_at, lines}     a line has no live hold (lapsed and purged, or
--                                          committed by a faster caller): the holds found
--                                          were extended, the record is unchanged
-- Error reply `ERR ...` (nothing changed) for a bad argument.

local EDGES = {['reserved>reserved'] = true, ['reserved>committing'] = true, ['preparing>committing'] = true}
local record, legacy = KEYS[1], KEYS[2]
local rid, from_state, to_state = ARGV[1], ARGV[2], ARGV[3]
local ttl_ms, retention_ms, require_live, want_lines = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local n = (#KEYS - 2) / 5
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_extend: rid is empty') end
if from_state == nil or to_state == nil or not EDGES[from_state .. '>' .. to_state] then
  return redis.error_reply('ERR reservation_extend: (from, to) must be (reserved, reserved), (reserved, committing) or (preparing, committing)')
end
if not is_int(ttl_ms) or ttl_ms < 1 or not is_int(retention_ms) or retention_ms < 1 then
  return redis.error_reply('ERR reservation_extend: ttl_ms and retention_ms must be integers >= 1')
end
if require_live ~= '0' and require_live ~= '1' then
  return redis.error_reply('ERR reservation_extend: require_live must be 0 or 1')
end
if want_lines == nil or want_lines == '' then return redis.error_reply('ERR reservation_extend: lines are required') end
if not is_int(n) or n < 1 or #ARGV ~= 7 + 3 * n then
  return redis.error_reply('ERR reservation_extend: one line (5 KEYS, 3 arguments) at least, and as many KEYS as arguments')
end
for i = 1, n do
  local at = 7 + 3 * (i - 1)
  if ARGV[at + 1] == '' or ARGV[at + 3] == '' then return redis.error_reply('ERR reservation_extend: sku and tag are required') end
  if not is_int(tonumber(ARGV[at + 2])) or tonumber(ARGV[at + 2]) < 0 then
    return redis.error_reply('ERR reservation_extend: bucket_index must be an integer >= 0')
  end
end

local now = now_ms()
local r, rh = rec_get(record, legacy, rid, now)
local state, expires_at, lines = r.state or '', num(r.expires_at), r.lines or ''
if state ~= from_state or lines ~= want_lines or (require_live == '1' and expires_at <= now) then
  return {0, state, expires_at, lines}
end

local earliest, all = nil, true
for i = 1, n do
  local k, at = 2 + 5 * (i - 1), 7 + 3 * (i - 1)
  local until_ms = extend_hold(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], ARGV[at + 1], ARGV[at + 2],
    rid, ttl_ms, now)
  if until_ms then
    -- The sweeper's index keeps each bucket's earliest expiry (LT): a later one changes nothing.
    redis.call('ZADD', KEYS[k + 5], 'LT', int(until_ms), ARGV[at + 3])
    if earliest == nil or until_ms < earliest then earliest = until_ms end
  else
    all = false
  end
end
if not all then
  return {2, state, expires_at, lines}
end

r.state, r.expires_at = to_state, int(earliest)
-- The lease only guards `pending`.
r.lease, r.owner = nil, nil
rec_put(rh, r, retention_ms)
return {1, to_state, earliest, lines}
