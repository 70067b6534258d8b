--! prelude: base, hold_index
-- lib/bucket.lua: the stock bucket's outbox, reservation records and hold layout (a prelude:
-- prepended by the loader to the scripts that name it, after base and hold_index;
-- lua/README.md).

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
-- The holds one reserve_batch call made, as one entry instead of one per hold (an XADD of 13
-- fields and an HINCRBY per hold were a fifth of a hold's Redis time): type `reserved_n`, the
-- fields all its `reserved` events share (`sku`, `bucket`, `on_hand`, `sold`, `at`),
-- `reserved_before` (the bucket's count before the first of them), `seq` (the first one's
-- sequence number: the call takes #holds at once) and `holds`, one `rid\tqty\texpires_at` per
-- hold joined by "\n" (ids hold no control characters). The relay expands it into the
-- `reserved` events per-hold entries made, with the same ids and fields.
local function emit_reserved_n(inv, events, sku, bucket, on_hand, reserved_before, sold, now, holds)
  local first = redis.call('HINCRBY', inv, 'seq', #holds) - #holds + 1
  redis.call('XADD', events, '*', 'type', 'reserved_n', 'sku', sku, 'bucket', bucket, 'on_hand', int(on_hand),
    'reserved_before', int(reserved_before), 'sold', int(sold), 'at', int(now), 'seq', int(first),
    'holds', table.concat(holds, '\n'))
end

-- Reservation records, packed into shared small hashes (docs/inventory-redis.md, "Reservation
-- records"). A record is one field of a generation hash of its shard: `<shard>:<g>` (kept
-- records, 12 h generations) or `<shard>:s<g>` (records kept at most 15 min, i.e. refusals: 5 min
-- generations), where `<shard>` is the key the caller declares (`res:{T}`, T a tag of the rid's
-- cluster slot, so every key here shares that slot) and g = floor(deadline / generation): each
-- generation hash is PEXPIREAT'd as a whole at its end, so a record lives at least its retention
-- and at most one generation longer. The field is the rid (16 raw bytes after a marker byte for a
-- 32-hex-digit or canonical UUID id: ids never hold control characters, so no raw id looks like
-- one), the value its fields joined by "\n" in REC_FIELDS order (trailing empty ones dropped) and
-- the state as one letter, or for the common shapes the tighter form of rec_pack. A record that
-- does not fit a listpack entry (field or value over 64 bytes: a long id, a pending claim with
-- its owner token, many lines) is a string of its own,
-- `<shard>:k:<rid>`, with a TTL. Records written before (`res:{rid}`, a string or a hash; the
-- caller declares it as the legacy key) are still read, and moved here by their next write, until
-- the service's survey finds none left on a standalone Redis (field `legacy` of the pool, below).
local REC_FIELDS = {'state', 'fp', 'expires_at', 'lines', 'shortages', 'lease', 'owner'}
local REC_STATES = {pending = 'p', reserved = 'r', rejected = 'j', preparing = 'P', committing = 'c',
  committed = 'C', released = 'l', expired = 'x'}
-- REC_STATES inverted, spelled out: the prelude runs on every call, so it builds nothing it can
-- write down.
local REC_NAMES = {p = 'pending', r = 'reserved', j = 'rejected', P = 'preparing', c = 'committing',
  C = 'committed', l = 'released', x = 'expired'}
local REC_GEN, REC_SHORT_GEN = 12 * 3600 * 1000, 5 * 60 * 1000
local REC_SHORT_MAX, REC_MAX = 15 * 60 * 1000, 36 * 3600 * 1000
local REC_ENTRY_MAX = 64
local REC_UUID = '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$'
-- 2n lowercase hex digits -> n raw bytes, after the marker byte `mark` (and the byte `letter`,
-- if given). Arithmetic on the digits' codes, one string.byte and one string.char: this runs for
-- every id a script touches (the record and the hold), and a substring, tonumber and char per
-- byte cost ~5 us an id.
local function rec_pack_hex(hex, n, mark, letter)
  local b = {string.byte(hex, 1, 2 * n)}
  for i = 1, n do
    local hi, lo = b[2 * i - 1], b[2 * i]
    if hi > 57 then hi = hi - 87 else hi = hi - 48 end
    if lo > 57 then lo = lo - 87 else lo = lo - 48 end
    b[i] = hi * 16 + lo
  end
  if letter then return string.char(mark, letter, unpack(b, 1, n)) end
  return string.char(mark, unpack(b, 1, n))
end
-- The rid as a hash field: 32 lowercase hex digits -> "\1" + 16 bytes, a canonical UUID ->
-- "\2" + 16 bytes, anything else unchanged.
local function rec_field(rid)
  local n = #rid
  if n == 32 then
    if not string.find(rid, '[^0-9a-f]') then return rec_pack_hex(rid, 16, 1) end
  elseif n == 36 and string.find(rid, REC_UUID) and not string.find(rid, '%u') then
    return rec_pack_hex((string.gsub(rid, '%-', '')), 16, 2)
  end
  return rid
end
-- The rid a field of rec_field stands for.
local function rec_rid(field)
  local mark = string.byte(field, 1)
  if #field ~= 17 or (mark ~= 1 and mark ~= 2) then return field end
  if mark == 1 then
    return string.format('%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(field, 2, 17))
  end
  return string.format('%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x',
    string.byte(field, 2, 17))
end
-- The common shapes of a record are packed tighter (rec_pack), read by position (the packed
-- bytes may be anything; a marker byte is never a state letter, so text values read as text):
--   a hold, its fingerprint 16 lowercase hex digits (what the services send,
--     reservations::fingerprint), its units and bucket under 256: one byte 16 + the state's index
--     in REC_ORDER, the fingerprint as 8 raw bytes, the expiry (ms) as 6, the units and the
--     bucket as a byte each, then the SKU: 29 bytes for a 12-character SKU;
--   any other hold: marker 5 (3: the fingerprint as its 16 characters), the state letter, the
--     fingerprint, the expiry as 6 bytes, `qty,bucket,sku`;
--   a refusal: marker 6 (4: the fingerprint as its characters), the state letter, the
--     fingerprint, the one shortage as `requested,available,sku`.
-- Markers 3 to 6 on a hold are also what builds before wrote (still read; repacked when written).
local REC_ORDER = 'prjPcClx'
local REC_ONE = '^%[%["([^"\\%c]*)",(%d+),(%d+)%]%]$'
-- Whether fingerprint `fp` is 16 lowercase hex digits (what the services send): packed as 8 bytes.
local function rec_hex_fp(fp)
  return #fp == 16 and not string.find(fp, '[^0-9a-f]')
end
local function rec_one(sku, a, b)
  return '[["' .. sku .. '",' .. a .. ',' .. b .. ']]'
end
local function rec_unpack_compact(v, mark)
  if mark >= 16 then
    local state = string.sub(REC_ORDER, mark - 15, mark - 15)
    local b1, b2, b3, b4, b5, b6, qty, bucket = string.byte(v, 10, 17)
    return {state = REC_NAMES[state], fp = string.format('%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(v, 2, 9)),
      expires_at = int(((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6),
      lines = rec_one(string.sub(v, 18), qty, bucket)}
  end
  local letter, rec, at = string.sub(v, 2, 2), nil, 19
  if mark >= 5 then
    rec = {fp = string.format('%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(v, 3, 10))}
    at = 11
  else
    rec = {fp = string.sub(v, 3, 18)}
  end
  rec.state = REC_NAMES[letter] or letter
  local hold = mark == 3 or mark == 5
  if hold then
    local b1, b2, b3, b4, b5, b6 = string.byte(v, at, at + 5)
    rec.expires_at, at = int(((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6), at + 6
  end
  local x, y, sku = string.match(v, '^(%d+),(%d+),(.*)$', at)
  if hold then rec.lines = rec_one(sku, x, y) else rec.shortages = rec_one(sku, x, y) end
  return rec
end
-- An expiry (ms, an integer 1 <= e < 2^48) as the 6 bytes of a packed hold, high byte first.
local function rec_exp6(e)
  local e6 = e % 256
  e = (e - e6) / 256
  local e5 = e % 256
  e = (e - e5) / 256
  local e4 = e % 256
  e = (e - e4) / 256
  local e3 = e % 256
  e = (e - e3) / 256
  local e2 = e % 256
  return string.char((e - e2) / 256, e2, e3, e4, e5, e6)
end
-- The packed value of record fields `p` (REC_FIELDS order, the state as its letter, '' unset),
-- or nil when they are not of a common shape. This runs on every record write (~1 us).
local function rec_pack(p)
  local state, fp, exp = p[1], p[2], p[3]
  if #state ~= 1 or #fp ~= 16 or p[6] ~= '' or p[7] ~= '' then return nil end
  local hold, one = nil, nil
  if p[5] == '' and exp ~= '' then
    hold, one = true, p[4]
  elseif exp == '' and p[4] == '' then
    hold, one = false, p[5]
  else
    return nil
  end
  local sku, x, y = string.match(one, REC_ONE)
  if not sku then return nil end
  local raw_fp = rec_hex_fp(fp)
  local head
  if not hold then
    if raw_fp then head = rec_pack_hex(fp, 8, 6, string.byte(state)) else head = string.char(4) .. state .. fp end
    return head .. x .. ',' .. y .. ',' .. sku
  end
  -- Units and bucket as bytes when each is a number under 256 written as such.
  local si, qty, bucket = string.find(REC_ORDER, state, 1, true), tonumber(x), tonumber(y)
  local bytes = raw_fp and si and qty < 256 and bucket < 256 and int(qty) == x and int(bucket) == y
  if bytes then
    head = rec_pack_hex(fp, 8, 15 + si)
  elseif raw_fp then
    head = rec_pack_hex(fp, 8, 5, string.byte(state))
  else
    head = string.char(3) .. state .. fp
  end
  -- A positive integer under 2^48 (6 bytes), written without leading zeros.
  local e = tonumber(exp)
  if not e or e < 1 or e >= 281474976710656 or int(e) ~= exp then return nil end
  head = head .. rec_exp6(e)
  if bytes then return head .. string.char(qty, bucket) .. sku end
  return head .. x .. ',' .. y .. ',' .. sku
end
-- rec_pack of the two records the Reserve scripts write on every call, a refusal (state,
-- fingerprint, shortages) and a hold (state, fingerprint, expiry, lines), read straight from
-- `rec` instead of through rec_put's loop over every field (Lua's calls are what a record
-- write costs here: the loop was ~4 us of a refusal's ~30 us in reserve_batch). nil for any
-- other shape, or a value rec_pack would not pack: rec_put then takes the general way.
local function rec_pack_reserve(rec)
  if rec.packed then return rec.packed end
  local state, fp, exp, lines, shortages = rec.state, rec.fp, rec.expires_at, rec.lines, rec.shortages
  if rec.lease ~= nil or rec.owner ~= nil or type(fp) ~= 'string' or string.find(fp, '\n', 1, true) then
    return nil
  end
  if state == 'rejected' and exp == nil and lines == nil and type(shortages) == 'string' then
    return rec_pack({REC_STATES.rejected, fp, '', '', shortages, '', ''})
  elseif state == 'reserved' and shortages == nil and type(exp) == 'string' and type(lines) == 'string' then
    return rec_pack({REC_STATES.reserved, fp, exp, lines, '', '', ''})
  end
  return nil
end
-- A one-line refusal: `requested` units of `sku` asked for, `available` left -> the record to
-- rec_put under fingerprint `fp`, whose `shortages` field is the reply's (what
-- cjson.encode({{sku, requested, available}}) gives). For a plain SKU (letters, digits and
-- `-_.:`, which JSON leaves as they are), counts under 10^14 (written the same by cjson and
-- int) and a fingerprint of 16 lowercase hex digits, both strings are built straight from the
-- values, the packed one as rec_pack would: no JSON encoded, then parsed back and packed (a
-- sold-out SKU's batch refuses up to 64 ids a call). Otherwise the usual way.
local REC_PLAIN_SKU = '^[%w%-_.:]+$'
local REC_REJECTED = 106 -- string.byte(REC_STATES.rejected): the refusal's letter
local function rec_refusal(fp, sku, requested, available)
  if requested >= 1e14 or available >= 1e14 or not string.find(sku, REC_PLAIN_SKU) then
    return {state = 'rejected', fp = fp, shortages = cjson.encode({{sku, requested, available}})}
  end
  local x, y = int(requested), int(available)
  local rec = {state = 'rejected', fp = fp, shortages = rec_one(sku, x, y)}
  if rec_hex_fp(fp) then
    rec.packed = rec_pack_hex(fp, 8, 6, REC_REJECTED) .. x .. ',' .. y .. ',' .. sku
  end
  return rec
end
-- A one-line hold: `qty` units of `sku` in bucket `bucket` until `expires_at`, under fingerprint
-- `fp`, with the lines its caller sent -> the record to rec_put. When those lines are the one
-- rec_one writes for these values (what the services send) and the SKU is plain, the
-- fingerprint 16 lowercase hex digits and the units and bucket under 256, the packed value is
-- built straight from the values, as rec_pack would (~6 us of a hold's ~40 in a batch: no
-- pattern parsing the lines back); otherwise the usual way.
local REC_RESERVED = 17 -- 15 + the index of REC_STATES.reserved in REC_ORDER: a hold's marker
local function rec_hold(fp, lines, sku, qty, bucket, expires_at)
  local rec = {state = 'reserved', fp = fp, lines = lines, expires_at = int(expires_at)}
  if qty < 256 and bucket < 256 and expires_at >= 1 and expires_at < 281474976710656 and rec_hex_fp(fp)
    and string.find(sku, REC_PLAIN_SKU)
    and lines == rec_one(sku, int(qty), int(bucket)) then
    rec.packed = rec_pack_hex(fp, 8, REC_RESERVED) .. rec_exp6(expires_at) .. string.char(qty, bucket) .. sku
  end
  return rec
end
local function rec_unpack(v)
  local mark = string.byte(v, 1)
  if (mark >= 3 and mark <= 6) or (mark >= 16 and mark <= 23) then return rec_unpack_compact(v, mark) end
  local rec, i, n = {}, 1, 1
  while true do
    local j = string.find(v, '\n', i, true)
    local part = string.sub(v, i, (j or 0) - 1)
    if part ~= '' then rec[REC_FIELDS[n]] = part end
    if not j then break end
    i, n = j + 1, n + 1
  end
  if rec.state then rec.state = REC_NAMES[rec.state] or rec.state end
  return rec
end
-- Linear hashing (the hold shards and the record pools): the shard of a 32-bit hash `h` among
-- `shards`. Going from n to n + 1 shards moves entries of shard n - P (P the largest power of two
-- <= n) only, and only to shard n.
local function lin_half(shards)
  local p = 1
  while p * 2 <= shards do p = p * 2 end
  return p
end
local function lin_slot(h, shards)
  local p = lin_half(shards)
  local n = h % (2 * p)
  if n >= shards then n = h % p end
  return n
end
-- The shard that splits when `shards` grow by one (into itself and the new shard `shards`).
local function lin_split_from(shards)
  return shards - lin_half(shards)
end
local function id_hash(s)
  return tonumber(string.sub(redis.sha1hex(s), 1, 8), 16)
end
-- The generations a live record may be in at `now`, likeliest first: kept records newest
-- generation first (a record is mostly read soon after its write, and its deadline is then about
-- its retention, ~24 h, away), then refusals oldest first (kept minutes, their deadline is near).
-- A kept generation is named by its number g, a short one by `s<g>`.
local function rec_generations(now)
  local names = {}
  for g = math.floor((now + REC_MAX) / REC_GEN), math.floor(now / REC_GEN), -1 do
    names[#names + 1] = int(g)
  end
  for g = math.floor(now / REC_SHORT_GEN), math.floor((now + REC_SHORT_MAX) / REC_SHORT_GEN) do
    names[#names + 1] = 's' .. int(g)
  end
  return names
end
-- The generation of a record kept `pexpire_ms` until `deadline` -> its name and its end (ms).
local function rec_generation(deadline, pexpire_ms)
  if pexpire_ms <= REC_SHORT_MAX then
    local g = math.floor(deadline / REC_SHORT_GEN)
    return 's' .. int(g), (g + 1) * REC_SHORT_GEN
  end
  local g = math.floor(deadline / REC_GEN)
  return int(g), (g + 1) * REC_GEN
end

-- The pooled layout (standalone Redis: a caller declares the shard as `res:{T}:pooled`). The
-- records of a generation share the hashes `res:pool:<gen>:<i>`, i by linear hashing on the
-- packed field's SHA-1, with as many hashes as the generation needs: the hash `res:pool` keeps
-- each live generation's shard count (field `<gen>`) and record count (`#<gen>`), and once a
-- generation holds more than REC_POOL_FILL records a shard, the next shard in linear-hashing
-- order is split in two. So ~40 records share each hash's key, expiry entry and allocation,
-- instead of the ~8 that land in each of the 16,384 per-slot shards at 100,000 records, and no
-- hash ever passes `hash-max-listpack-entries` (an unsplit shard averages 2 x 40 entries) however
-- many records a generation holds. A cluster (one slot per script) keeps the per-slot shards.
-- `since` (the first pooled write) bounds how long the per-slot shards a build before wrote are
-- read as well: REC_POOL_WINDOW, past which every generation they could be in has ended; the
-- service's survey (background::survey_per_slot_records) ends it sooner, setting `per_slot` to 0
-- once a scan finds none of them.
local REC_POOL, REC_POOL_FILL = 'res:pool', 40
local REC_POOL_WINDOW = REC_MAX + REC_GEN
-- This call's view of the pooled generations' shard counts (read once, kept by its own splits).
local rec_pool_n = {}
local function rec_hash(h)
  if not h.hash then h.hash = id_hash(h.field) end
  return h.hash
end
local function rec_pool_key(h, gen)
  return REC_POOL .. ':' .. gen .. ':' .. lin_slot(rec_hash(h), rec_pool_n[gen])
end
-- Where the record of handle `h` is now (a split in this call may have moved a pooled one).
local function rec_where(h)
  if h.gen then return rec_pool_key(h, h.gen) end
  return h.at
end
-- The record count of a pooled generation (field `#<gen>` of the pool) moves by one per record
-- added or removed. A script writing many records in one call (reserve_batch) calls
-- rec_count_defer first and rec_count_flush before it returns: the counts are then read once per
-- generation, kept here and written once per generation (HINCRBY by the call's sum), instead of
-- one HINCRBY per record; splits happen at the same counts. Without rec_count_defer, at once.
local rec_counts = nil -- gen -> {count = as this call sees it, delta = not yet written}
local rec_count_gens = nil -- the generations of rec_counts, in the order first counted
local function rec_count_defer()
  rec_counts, rec_count_gens = {}, {}
end
-- Moves generation `gen`'s record count by `d` -> the count after it.
local function rec_count_add(gen, d)
  if not rec_counts then return redis.call('HINCRBY', REC_POOL, '#' .. gen, d) end
  local c = rec_counts[gen]
  if not c then
    c = {count = num(redis.call('HGET', REC_POOL, '#' .. gen)), delta = 0}
    rec_counts[gen] = c
    rec_count_gens[#rec_count_gens + 1] = gen
  end
  c.count, c.delta = c.count + d, c.delta + d
  return c.count
end
local function rec_count_flush()
  if not rec_counts then return end
  for _, gen in ipairs(rec_count_gens) do
    local delta = rec_counts[gen].delta
    if delta ~= 0 then redis.call('HINCRBY', REC_POOL, '#' .. gen, delta) end
  end
  rec_counts, rec_count_gens = nil, nil
end
-- The shard count of pooled generation `gen`, which is created (one shard) if it has none. A new
-- generation also drops the counts of those that ended: their hashes have expired.
local function rec_pool_shards(gen, now)
  local n = rec_pool_n[gen]
  if n then return n end
  n = num(redis.call('HGET', REC_POOL, gen))
  if n < 1 then
    n = 1
    local ended = {}
    for _, f in ipairs(redis.call('HKEYS', REC_POOL)) do
      local short, g = string.match(f, '^#?(s?)(%d+)$')
      if g then
        local len = short == 's' and REC_SHORT_GEN or REC_GEN
        if (tonumber(g) + 1) * len <= now then ended[#ended + 1] = f end
      end
    end
    if #ended > 0 then redis.call('HDEL', REC_POOL, unpack(ended)) end
    redis.call('HSET', REC_POOL, gen, 1)
    redis.call('HSETNX', REC_POOL, 'since', int(now))
  end
  rec_pool_n[gen] = n
  return n
end
-- Generation `gen` (n shards, ending at `ends`) grows to n + 1: shard n - P gives the entries
-- whose hash now maps to shard n (at most ~2 x REC_POOL_FILL read, about half moved).
local function rec_pool_split(gen, n, ends)
  local from = REC_POOL .. ':' .. gen .. ':' .. lin_split_from(n)
  local to = REC_POOL .. ':' .. gen .. ':' .. n
  local all, moved, gone = redis.call('HGETALL', from), {}, {}
  for i = 1, #all, 2 do
    if lin_slot(id_hash(all[i]), n + 1) == n then
      moved[#moved + 1] = all[i]
      moved[#moved + 1] = all[i + 1]
      gone[#gone + 1] = all[i]
    end
  end
  if #gone > 0 then
    redis.call('HSET', to, unpack(moved))
    redis.call('PEXPIREAT', to, int(ends))
    redis.call('HDEL', from, unpack(gone))
  end
  redis.call('HSET', REC_POOL, gen, n + 1)
  rec_pool_n[gen] = n + 1
end
-- The generations a lookup at `now` looks in and the pool's `since`/`per_slot`/`legacy`: one HMGET per
-- call (a batch's items share its `now`), not one per record read. Later lookups of the call
-- know a pooled generation by rec_pool_n, which this call's own writes keep up to date
-- (rec_pool_shards creates, rec_pool_split grows).
local rec_seen = nil
local function rec_meta(now)
  if rec_seen and rec_seen.now == now then return rec_seen end
  local gens = rec_generations(now)
  local meta = redis.call('HMGET', REC_POOL, 'since', 'per_slot', 'legacy', unpack(gens))
  for i, gen in ipairs(gens) do
    if meta[i + 3] then rec_pool_n[gen] = num(meta[i + 3]) end
  end
  rec_seen = {now = now, gens = gens, since = meta[1], per_slot = meta[2], legacy = meta[3]}
  return rec_seen
end
--! per call: rec_call_begin
-- A new call's view: forgets the shard counts, deferred record counts and generations the last
-- call saw. Each EVAL starts from a fresh copy of this prelude; a function library stays loaded
-- between FCALLs, so its callback calls this first (the directive above).
local function rec_call_begin()
  rec_pool_n, rec_counts, rec_count_gens, rec_seen = {}, nil, nil, nil
end
-- Finds rid's record -> table field -> string ({} when there is none), and a handle for rec_put
-- (where it was found). `shard` is `res:{T}`, or `res:{T}:pooled` for the pooled layout (which
-- also reads `res:{T}` within the window). `legacy` (`res:{rid}`, or nil) is where records were
-- written before. An id too long for a listpack entry is never in a generation hash: only its
-- own key is read.
local function rec_get(shard, legacy, rid, now)
  local pooled = string.sub(shard, -7) == ':pooled'
  if pooled then shard = string.sub(shard, 1, -8) end
  local h = {shard = shard, pooled = pooled, legacy = legacy, rid = rid, field = rec_field(rid), now = now}
  local meta = pooled and rec_meta(now)
  if #h.field <= REC_ENTRY_MAX then
    local gens, per_slot = meta and meta.gens or rec_generations(now), true
    if pooled then
      for _, gen in ipairs(gens) do
        if rec_pool_n[gen] then
          local key = rec_pool_key(h, gen)
          local v = redis.call('HGET', key, h.field)
          if v then
            h.at, h.in_hash, h.gen = key, true, gen
            return rec_unpack(v), h
          end
        end
      end
      -- The per-slot shards: only within the window, until the service's survey found none
      -- left (`per_slot` = 0), and only those that exist (one EXISTS for all).
      per_slot = meta.per_slot ~= '0' and (not meta.since or now < num(meta.since) + REC_POOL_WINDOW)
      if per_slot then
        local keys = {}
        for i, gen in ipairs(gens) do keys[i] = shard .. ':' .. gen end
        per_slot = redis.call('EXISTS', unpack(keys)) > 0
      end
    end
    if per_slot then
      for _, gen in ipairs(gens) do
        local key = shard .. ':' .. gen
        local v = redis.call('HGET', key, h.field)
        if v then
          h.at, h.in_hash = key, true
          return rec_unpack(v), h
        end
      end
    end
  end
  local own = shard .. ':k:' .. rid
  local v = redis.call('GET', own)
  if v then
    h.at = own
    return rec_unpack(v), h
  end
  -- The service's survey (background::survey_legacy_records) sets `legacy` to 0 once a scan of a
  -- standalone Redis finds no record keys of that layout left: none is read then.
  if not legacy or (meta and meta.legacy == '0') then return {}, h end
  v = redis.pcall('GET', legacy)
  local rec = {}
  if type(v) == 'table' and v.err then
    -- WRONGTYPE: a hash, written before records were packed.
    local r = redis.call('HMGET', legacy, unpack(REC_FIELDS))
    for i, f in ipairs(REC_FIELDS) do
      if r[i] then rec[f] = r[i] end
    end
  elseif v then
    rec = rec_unpack(v)
  end
  if rec.state then h.at = legacy end
  return rec, h
end
-- Removes the record rec_get found (nothing if it found none).
local function rec_del(h)
  if h.gen then
    if redis.call('HDEL', rec_where(h), h.field) == 1 then rec_count_add(h.gen, -1) end
  elseif h.in_hash then
    redis.call('HDEL', h.at, h.field)
  elseif h.at then
    redis.call('DEL', h.at)
  end
  h.at, h.in_hash, h.gen = nil, nil, nil
end
-- The answer a whole Reserve (reserve_single, reserve_batch, reservation_reserve) gives a record
-- `rec` (from rec_get) of its id that exists, as reservation_claim says it: a conflict under
-- another fingerprint `fp`, busy while a multi-step call has it pending, else its first answer.
-- nil without a record.
local function rec_answer(rec, fp)
  if not rec.state then return nil end
  if rec.fp ~= fp then return {'conflict'} end
  if rec.state == 'pending' then return {'busy'} end
  return {rec.state, num(rec.expires_at), rec.shortages or ''}
end
-- Writes `rec` as the record of handle `h` (from rec_get), kept `pexpire_ms` from now (nil: as
-- long as where it was found is kept). A refusal's lines are not kept (its shortages name the
-- SKUs). A field holding "\n" would corrupt the packing: refused (callers pass hex, ids and
-- JSON, which never do).
local function rec_put(h, rec, pexpire_ms)
  if rec.state == 'rejected' then rec.lines = nil end
  local value = rec_pack_reserve(rec)
  if not value then
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
    value = rec_pack(parts) or table.concat(parts, '\n', 1, last)
  end
  local fits = #h.field <= REC_ENTRY_MAX and #value <= REC_ENTRY_MAX
  if not pexpire_ms then
    -- Kept as long as before: in the same generation hash, or as long as its key has left.
    if h.in_hash and fits then
      redis.call('HSET', rec_where(h), h.field, value)
      return
    end
    pexpire_ms = h.at and num(redis.call('PTTL', rec_where(h))) or 0
    if pexpire_ms < 1 then pexpire_ms = REC_SHORT_MAX end
    pexpire_ms = math.min(pexpire_ms, REC_MAX)
  end
  if pexpire_ms > REC_MAX then error('record retention over ' .. REC_MAX .. ' ms') end
  local deadline = h.now + pexpire_ms
  if fits and h.pooled then
    local gen, ends = rec_generation(deadline, pexpire_ms)
    if h.gen ~= gen then rec_del(h) end
    local n = rec_pool_shards(gen, h.now)
    local key = rec_pool_key(h, gen)
    local added = redis.call('HSET', key, h.field, value) == 1
    redis.call('PEXPIREAT', key, int(ends))
    h.at, h.in_hash, h.gen = key, true, gen
    if added and rec_count_add(gen, 1) > REC_POOL_FILL * n then
      rec_pool_split(gen, n, ends)
      h.at = rec_where(h)
    end
  elseif fits then
    local gen, ends = rec_generation(deadline, pexpire_ms)
    local key = h.shard .. ':' .. gen
    if h.at ~= key then rec_del(h) end
    redis.call('HSET', key, h.field, value)
    redis.call('PEXPIREAT', key, int(ends))
    h.at, h.in_hash = key, true
  else
    local key = h.shard .. ':k:' .. h.rid
    if h.at ~= key then rec_del(h) end
    redis.call('SET', key, value, 'PX', int(pexpire_ms))
    h.at, h.in_hash = key, nil
  end
end

-- The hold layout and its expiry index: lib/hold_index.lua.
local SHARD_FILL = 32
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
  return lin_slot(id_hash(rid), shards)
end
-- -> the shard count and the field bound of shard 0 (a number, or nil when the zset indexes).
local function hold_shards(inv)
  local st = redis.call('HMGET', inv, 'hs', 'hx')
  return math.max(num(st[1]), 1), st[2] and num(st[2]) or nil
end
-- A one-shard bucket keeps the holds of packed ids (rec_field: the 32-hex-digit and UUID ids
-- the services send) as fields of the bucket hash itself, so the few holds of a spread-out SKU
-- pay for no key of their own (~12 bytes a hold at 10 holds a SKU). Any other id (kept as sent,
-- up to 128 bytes: a field over 64 would turn the bucket's counters into a hashtable), holds a
-- build before wrote there, and every shard from two shards on live in the keys `<shard>n`.
-- Bucket fields never start with a control byte, so a packed field there is always a hold.
local function hold_is_packed(field)
  local mark = string.byte(field, 1)
  return #field == 17 and (mark == 1 or mark == 2)
end
-- Whether the hold of field `f` (rec_field) lives in the bucket hash of a bucket of `shards`.
local function hold_in_bucket(f, shards)
  return shards == 1 and hold_is_packed(f)
end
-- Every hold of shard n as a flat list key, field, value (its bucket-hash fields first when
-- the bucket has one shard).
local function hold_entries(inv, shard, n, shards)
  local out = {}
  if shards == 1 then
    local all = redis.call('HGETALL', inv)
    for i = 1, #all, 2 do
      if hold_is_packed(all[i]) then
        out[#out + 1] = inv
        out[#out + 1] = all[i]
        out[#out + 1] = all[i + 1]
      end
    end
  end
  local key = shard .. n
  local entries = redis.call('HGETALL', key)
  for i = 1, #entries, 2 do
    out[#out + 1] = key
    out[#out + 1] = entries[i]
    out[#out + 1] = entries[i + 1]
  end
  return out
end
-- Whether shard n holds nothing, after a hold left it; `left`: the bucket's hold count now.
-- A one-shard bucket's hash is only scanned when the count says it may be the last one (a count
-- too high leaves the bound in place, which the next purge clears).
local function hold_shard_empty(inv, shard, n, shards, left)
  if redis.call('EXISTS', shard .. n) == 1 then return false end
  if shards > 1 then return true end
  if left > 0 then return false end
  for _, field in ipairs(redis.call('HKEYS', inv)) do
    if hold_is_packed(field) then return false end
  end
  return true
end
-- Once the last hold is gone the bucket forgets its shard count (an idle SKU pays nothing).
local function hold_forget_if_empty(inv, index)
  if redis.call('HEXISTS', inv, 'hx') == 0 and redis.call('EXISTS', index) == 0 then
    redis.call('HDEL', inv, 'hs', 'hn')
  end
end
-- Where rid's hold is in the shard layout -> its shard n, then the key, field and value, or
-- nil for those three: the bucket hash (a one-shard bucket's packed id), the shard key under the
-- packed id, then under the id as sent (before ids were packed).
local function hold_find(inv, shard, rid, shards)
  local n, f = hold_slot(rid, shards), rec_field(rid)
  if hold_in_bucket(f, shards) then
    local v = redis.call('HGET', inv, f)
    if v then return n, inv, f, v end
  end
  local key = shard .. n
  local v = redis.call('HGET', key, f)
  if not v and f ~= rid then
    f = rid
    v = redis.call('HGET', key, f)
  end
  if v then return n, key, f, v end
  return n
end
-- -> units, expiry ms of rid's hold (either layout), or nil. Units 0: an orphan, holds nothing.
local function hold_get(inv, holds, held, rid)
  local _, shard = hold_keys(holds)
  local _, _, _, v = hold_find(inv, shard, rid, (hold_shards(inv)))
  if v then return hold_unpack(v) end
  local e = redis.call('ZSCORE', holds, rid)
  if e then return num(redis.call('HGET', held, rid)), num(e) end
  return nil
end
-- The bucket's hold counts and shard 0's field bound, for a script that stores several holds
-- (reserve_batch.lua): read once, passed to each hold_put, written once by hold_state_save.
-- `old`: whether the old layout's zset still exists (read once too; nothing here adds to it).
local function hold_counts(inv, old)
  local st = redis.call('HMGET', inv, 'hs', 'hn', 'hx')
  local bound = st[3] and num(st[3]) or nil
  return {shards = math.max(num(st[1]), 1), count = num(st[2]), old = old, bound = bound, had = bound ~= nil}
end
local function hold_state(inv, holds)
  return hold_counts(inv, redis.call('EXISTS', holds) == 1)
end
-- One shard is the default (every reader, and every build before, takes a missing `hs` as 1), so
-- a bucket stores `hs` only from two shards on: ~6 bytes less a spread-out SKU.
local function hold_state_save(inv, st)
  local fields = {'hn', int(st.count)}
  if st.shards > 1 then
    fields[3], fields[4] = 'hs', int(st.shards)
  end
  if st.bound then
    fields[#fields + 1], fields[#fields + 2] = 'hx', int(st.bound)
  end
  redis.call('HSET', inv, unpack(fields))
  if not st.bound and st.had then redis.call('HDEL', inv, 'hx') end
  st.had = st.bound ~= nil
end
-- Stores rid's hold (replacing one of either layout); splits one shard when they are full.
-- `st` (from hold_state, optional): the counts to use and update; the caller saves them.
local function hold_put(inv, holds, held, rid, qty, expires_at, st)
  local index, shard = hold_keys(holds)
  local own = st == nil
  if own then st = hold_counts(inv, true) end
  local shards, count = st.shards, st.count
  if st.old and redis.call('ZREM', holds, rid) == 1 then redis.call('HDEL', held, rid) end
  local n, f = hold_slot(rid, shards), rec_field(rid)
  local added
  if hold_in_bucket(f, shards) then
    added = redis.call('HSET', inv, f, hold_pack(qty, expires_at)) == 1
    -- The same hold in the shard key (a build before kept every hold there) is moved, not doubled.
    if redis.call('HDEL', shard .. n, f, rid) > 0 then added = false end
  else
    added = redis.call('HSET', shard .. n, f, hold_pack(qty, expires_at)) == 1
    -- A hold stored under the id as sent (before ids were packed) is replaced, not doubled.
    if f ~= rid and redis.call('HDEL', shard .. n, rid) == 1 then added = false end
  end
  if added then count = count + 1 end
  if shards > 1 then
    redis.call('ZADD', index, 'LT', int(expires_at), int(n))
  elseif st.bound then
    st.bound = math.min(st.bound, expires_at)
  else
    -- The first bound in the field: fold in a zset of the layout before (one shard: only 0).
    local before = redis.call('ZSCORE', index, 0)
    if before then
      redis.call('DEL', index)
      expires_at = math.min(expires_at, num(before))
    end
    st.bound = expires_at
  end
  if count > shards * SHARD_FILL then
    local from = lin_split_from(shards)
    -- From one shard to two, the holds in the bucket hash move to the keys as well.
    local entries = hold_entries(inv, shard, from, shards)
    shards = shards + 1
    local stay, moved = nil, nil
    -- The moving holds go in one HSET per key they go to and one HDEL per key they leave (a
    -- call per entry cost ~3 us a hold).
    local to, gone = {}, {}
    for i = 1, #entries, 3 do
      local key, field, value = entries[i], entries[i + 1], entries[i + 2]
      local _, e = hold_unpack(value)
      local m = hold_slot(rec_rid(field), shards)
      if m == from then
        if stay == nil or e < stay then stay = e end
      elseif moved == nil or e < moved then
        moved = e
      end
      if key ~= shard .. m then
        local target = to[m] or {}
        target[#target + 1] = field
        target[#target + 1] = value
        to[m] = target
        local left = gone[key] or {}
        left[#left + 1] = field
        gone[key] = left
      end
    end
    for key, fields in pairs(gone) do redis.call('HDEL', key, unpack(fields)) end
    for m, fields in pairs(to) do redis.call('HSET', shard .. m, unpack(fields)) end
    -- From two shards on the zset indexes every shard.
    st.bound = nil
    if stay then redis.call('ZADD', index, int(stay), int(from)) else redis.call('ZREM', index, int(from)) end
    if moved then redis.call('ZADD', index, int(moved), int(shards - 1)) end
  end
  st.shards, st.count = shards, count
  if own then hold_state_save(inv, st) end
end
-- Removes rid's hold (either layout) -> the units it held (0 if none). The caller settles `reserved`.
local function hold_del(inv, holds, held, rid)
  local index, shard = hold_keys(holds)
  local shards, bound = hold_shards(inv)
  local n, key, f, v = hold_find(inv, shard, rid, shards)
  if v then
    redis.call('HDEL', key, f)
    local left = num(redis.call('HINCRBY', inv, 'hn', -1))
    if hold_shard_empty(inv, shard, n, shards, left) then
      if bound then redis.call('HDEL', inv, 'hx') else redis.call('ZREM', index, int(n)) end
    end
    hold_forget_if_empty(inv, index)
    return (hold_unpack(v))
  end
  local qty = 0
  if redis.call('ZREM', holds, rid) == 1 then qty = num(redis.call('HGET', held, rid)) end
  redis.call('HDEL', held, rid)
  return qty
end
-- Every hold of the bucket (either layout) -> list of {rid, units, expiry ms}. O(holds + shards).
local function hold_all(inv, holds, held)
  local _, shard = hold_keys(holds)
  local all = {}
  local shards = hold_shards(inv)
  for n = 0, shards - 1 do
    local entries = hold_entries(inv, shard, n, shards)
    for i = 1, #entries, 3 do
      local q, e = hold_unpack(entries[i + 2])
      all[#all + 1] = {rec_rid(entries[i + 1]), q, e}
    end
  end
  local old = redis.call('ZRANGE', holds, 0, -1, 'WITHSCORES')
  for i = 1, #old, 2 do
    all[#all + 1] = {old[i], num(redis.call('HGET', held, old[i])), num(old[i + 1])}
  end
  return all
end
-- The earliest hold expiry of the bucket (ms, a lower bound until a purge), or -1 with no hold.
-- Read from the index the purge reads (the field, else the zset), so the sweeper is never
-- woken for a bound the purge would not act on (a zset an older build wrote beside the field
-- during a rolling upgrade).
local function hold_next_expiry(inv, holds)
  local index = hold_keys(holds)
  local _, next_expiry = hold_shards(inv)
  local keys = {index, holds}
  if next_expiry then keys = {holds} else next_expiry = -1 end
  for _, key in ipairs(keys) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] and (next_expiry < 0 or num(first[2]) < next_expiry) then next_expiry = num(first[2]) end
  end
  return next_expiry
end
