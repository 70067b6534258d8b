--! prelude: base
-- lib/bucket.lua: the stock bucket's outbox, reservation records and hold layout (a prelude:
-- prepended by the loader to the scripts that name it, after base; lua/README.md).

-- The outbox. Every entry carries the bucket's next sequence number, kept in the bucket hash so
-- it outlives the stream (which outbox_ack deletes once empty): event ids built from it are
-- unique for good. Nothing is ever trimmed unpublished; once OUTBOX_LIMIT entries wait (the bus
-- is down), scripts that start new work refuse with an OUTBOX_FULL error reply instead.
local OUTBOX_LIMIT = 100000
local function outbox_full(events)
  return redis.call('XLEN', events) >= OUTBOX_LIMIT
end
local function emit(inv, events, fields)
  fields[#fields + 1] = 'seq'
  fields[#fields + 1] = int(redis.call('HINCRBY', inv, 'seq', 1))
  redis.call('XADD', events, '*', unpack(fields))
end

-- Reservation records (`res:{rid}`): one string per reservation, its fields joined by "\n" in
-- REC_FIELDS order (trailing empty ones dropped) and the state as one letter: a packed string
-- costs a third less than the same fields in a hash. Records written before this layout (a hash)
-- are still read; the next write of one replaces it by the string.
local REC_FIELDS = {'state', 'fp', 'expires_at', 'lines', 'shortages', 'lease', 'owner'}
local REC_STATES = {pending = 'p', reserved = 'r', rejected = 'j', preparing = 'P', committing = 'c',
  committed = 'C', released = 'l', expired = 'x'}
local REC_NAMES = {}
for name, code in pairs(REC_STATES) do REC_NAMES[code] = name end
-- -> table field -> string (absent fields nil); {} when there is no record.
local function rec_get(record)
  local v = redis.pcall('GET', record)
  local rec = {}
  if type(v) == 'table' and v.err then
    -- WRONGTYPE: a hash, written before records were packed.
    local r = redis.call('HMGET', record, unpack(REC_FIELDS))
    for i, f in ipairs(REC_FIELDS) do
      if r[i] then rec[f] = r[i] end
    end
  elseif v then
    local i, n = 1, 1
    while true do
      local j = string.find(v, '\n', i, true)
      local part = string.sub(v, i, (j or 0) - 1)
      if part ~= '' then rec[REC_FIELDS[n]] = part end
      if not j then break end
      i, n = j + 1, n + 1
    end
    if rec.state then rec.state = REC_NAMES[rec.state] or rec.state end
  end
  return rec
end
-- Writes `rec` as the record; `pexpire_ms` sets its TTL (nil keeps it). A field holding "\n"
-- would corrupt the packing: refused (callers pass hex, ids and JSON, which never do).
local function rec_put(record, rec, pexpire_ms)
  local parts, last = {}, 0
  for i, f in ipairs(REC_FIELDS) do
    local v = rec[f]
    if v == nil or v == false then v = '' end
    v = tostring(v)
    if string.find(v, '\n', 1, true) then error('record field ' .. f .. ' holds a newline') end
    if f == 'state' then v = REC_STATES[v] or v end
    parts[i] = v
    if v ~= '' then last = i end
  end
  local value = table.concat(parts, '\n', 1, last)
  if pexpire_ms then
    redis.call('SET', record, value, 'PX', int(pexpire_ms))
  else
    redis.call('SET', record, value, 'KEEPTTL')
  end
end

-- The hold layout. Holds of bucket B live in small hashes `inv:{B}:h<n>` (field = reservation
-- id, value = expiry ms * 1000 + units, or "expiry:units" from 1000 units up), `n` chosen by the
-- id's SHA-1 among the `hs` shards (linear hashing: shards split one at a time, so none outgrows
-- a listpack, even on a hot SKU), and `inv:{B}:hx` (zset shard -> a lower bound of its earliest
-- expiry; exact after a purge) finds the lapsed ones. `hs`/`hn` (shards, holds) live in the
-- bucket hash while any hold does. Holds of the old layout (`holds` zset rid -> expiry, `held`
-- hash rid -> units) are still found, purged, released, committed and extended (dual read);
-- every new or extended hold is written in the new layout, so the old keys drain away.
local SHARD_FILL = 32
local function hold_keys(holds)
  local base = string.sub(holds, 1, -6)
  return base .. 'hx', base .. 'h'
end
local function hold_pack(qty, expires_at)
  if qty < 1000 then return int(expires_at * 1000 + qty) end
  return int(expires_at) .. ':' .. int(qty)
end
-- -> units, expiry ms
local function hold_unpack(v)
  local e, q = string.match(v, '^(%d+):(%d+)$')
  if e then return tonumber(q), tonumber(e) end
  local n = num(v)
  return n % 1000, math.floor(n / 1000)
end
local function hold_slot(rid, shards)
  local h = tonumber(string.sub(redis.sha1hex(rid), 1, 8), 16)
  local p = 1
  while p * 2 <= shards do p = p * 2 end
  local n = h % (2 * p)
  if n >= shards then n = h % p end
  return n
end
local function hold_shards(inv)
  return math.max(num(redis.call('HGET', inv, 'hs')), 1)
end
-- Once the last hold is gone the bucket forgets its shard count (an idle SKU pays nothing).
local function hold_forget_if_empty(inv, index)
  if redis.call('EXISTS', index) == 0 then redis.call('HDEL', inv, 'hs', 'hn') end
end
-- -> units, expiry ms of rid's hold (either layout), or nil. Units 0: an orphan, holds nothing.
local function hold_get(inv, holds, held, rid)
  local _, shard = hold_keys(holds)
  local v = redis.call('HGET', shard .. hold_slot(rid, hold_shards(inv)), rid)
  if v then return hold_unpack(v) end
  local e = redis.call('ZSCORE', holds, rid)
  if e then return num(redis.call('HGET', held, rid)), num(e) end
  return nil
end
-- Stores rid's hold (replacing one of either layout); splits one shard when they are full.
local function hold_put(inv, holds, held, rid, qty, expires_at)
  local index, shard = hold_keys(holds)
  local st = redis.call('HMGET', inv, 'hs', 'hn')
  local shards, count = math.max(num(st[1]), 1), num(st[2])
  if redis.call('ZREM', holds, rid) == 1 then redis.call('HDEL', held, rid) end
  local n = hold_slot(rid, shards)
  if redis.call('HSET', shard .. n, rid, hold_pack(qty, expires_at)) == 1 then count = count + 1 end
  redis.call('ZADD', index, 'LT', int(expires_at), int(n))
  if count > shards * SHARD_FILL then
    local p = 1
    while p * 2 <= shards do p = p * 2 end
    local from = shards - p
    shards = shards + 1
    local entries = redis.call('HGETALL', shard .. from)
    local stay, moved = nil, nil
    for i = 1, #entries, 2 do
      local _, e = hold_unpack(entries[i + 1])
      if hold_slot(entries[i], shards) == from then
        if stay == nil or e < stay then stay = e end
      else
        redis.call('HSET', shard .. (shards - 1), entries[i], entries[i + 1])
        redis.call('HDEL', shard .. from, entries[i])
        if moved == nil or e < moved then moved = e end
      end
    end
    if stay then redis.call('ZADD', index, int(stay), int(from)) else redis.call('ZREM', index, int(from)) end
    if moved then redis.call('ZADD', index, int(moved), int(shards - 1)) end
  end
  redis.call('HSET', inv, 'hs', int(shards), 'hn', int(count))
end
-- Removes rid's hold (either layout) -> the units it held (0 if none). The caller settles `reserved`.
local function hold_del(inv, holds, held, rid)
  local index, shard = hold_keys(holds)
  local n = hold_slot(rid, hold_shards(inv))
  local v = redis.call('HGET', shard .. n, rid)
  if v then
    redis.call('HDEL', shard .. n, rid)
    if redis.call('EXISTS', shard .. n) == 0 then redis.call('ZREM', index, int(n)) end
    redis.call('HINCRBY', inv, 'hn', -1)
    hold_forget_if_empty(inv, index)
    return (hold_unpack(v))
  end
  local qty = 0
  if redis.call('ZREM', holds, rid) == 1 then qty = num(redis.call('HGET', held, rid)) end
  redis.call('HDEL', held, rid)
  return qty
end
-- Every hold of the bucket (either layout) -> list of {rid, units, expiry ms}. O(holds).
local function hold_all(holds, held)
  local index, shard = hold_keys(holds)
  local all = {}
  for _, n in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local entries = redis.call('HGETALL', shard .. n)
    for i = 1, #entries, 2 do
      local q, e = hold_unpack(entries[i + 1])
      all[#all + 1] = {entries[i], q, e}
    end
  end
  local old = redis.call('ZRANGE', holds, 0, -1, 'WITHSCORES')
  for i = 1, #old, 2 do
    all[#all + 1] = {old[i], num(redis.call('HGET', held, old[i])), num(old[i + 1])}
  end
  return all
end
-- The earliest hold expiry of the bucket (ms), or -1 with no hold.
local function hold_next_expiry(holds)
  local index = hold_keys(holds)
  local next_expiry = -1
  for _, key in ipairs({index, holds}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] and (next_expiry < 0 or num(first[2]) < next_expiry) then next_expiry = num(first[2]) end
  end
  return next_expiry
end
