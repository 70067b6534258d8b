--! prelude: base, hold_index, bucket
-- lib/bucket_purge.lua: the lazy expiry of lapsed holds, and what purges first: extending a live
-- hold and committing one; a prelude, after base and bucket (lua/README.md).

-- Lazy expiry: a lapsed hold must stop counting the moment anyone touches the bucket, not when
-- the sweeper gets round to it. Bounded per call so one script never blocks Redis for long.
-- `keep` is spared (commit.lua: a hold being committed was extended and must still commit).
local PURGE_LIMIT = 1000
local function purge(inv, holds, held, events, sku, bucket, now, limit, keep)
  local index, shard = hold_keys(holds)
  local due_shards, in_field = hold_due(inv, index, now, limit)
  local due = redis.call('ZRANGEBYSCORE', holds, '-inf', int(now), 'LIMIT', 0, limit)
  if #due == 0 and #due_shards == 0 then return 0 end
  local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold', 'hn', 'hs')
  local on_hand, reserved, sold, count = num(lv[1]), num(lv[2]), num(lv[3]), num(lv[4])
  local shards = math.max(num(lv[5]), 1)
  local purged = 0
  local function expire(rid, qty)
    reserved = math.max(reserved - qty, 0)
    -- An orphan entry (no units) is cleaned up silently: consumers expect qty >= 1.
    if qty > 0 then
      emit(inv, events, {'type', 'expired', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
        'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
    end
    purged = purged + 1
  end
  -- touched: holds were deleted; emptied: a shard left the index (an empty shard's stale
  -- entry, e.g. one an older build wrote during a rolling upgrade, goes too).
  local touched, emptied = false, false
  for _, n in ipairs(due_shards) do
    if purged >= limit then break end
    local entries = hold_entries(inv, shard, n, shards)
    local low = nil
    for i = 1, #entries, 3 do
      local rid = rec_rid(entries[i + 1])
      local qty, e = hold_unpack(entries[i + 2])
      if e <= now and rid ~= keep and purged < limit then
        redis.call('HDEL', entries[i], entries[i + 1])
        count = count - 1
        touched = true
        expire(rid, qty)
      elseif low == nil or e < low then
        low = e
      end
    end
    if low == nil then emptied = true end
    if in_field then
      if low then redis.call('HSET', inv, 'hx', int(low)) else redis.call('HDEL', inv, 'hx') end
    elseif low then
      redis.call('ZADD', index, int(low), n)
    else
      redis.call('ZREM', index, n)
    end
  end
  for _, rid in ipairs(due) do
    if purged >= limit then break end
    if rid ~= keep then
      local qty = num(redis.call('HGET', held, rid))
      redis.call('HDEL', held, rid)
      redis.call('ZREM', holds, rid)
      expire(rid, qty)
    end
  end
  if purged > 0 then redis.call('HSET', inv, 'reserved', int(reserved)) end
  if touched then redis.call('HSET', inv, 'hn', int(math.max(count, 0))) end
  if touched or emptied then hold_forget_if_empty(inv, index) end
  return purged
end

-- Moves `rid`'s hold in a bucket to max(stored expiry, now + ttl_ms), never earlier: an Extend
-- racing a Commit must not cut the commit's longer lease short. The bucket is purged first:
-- extending a lapsed hold would resurrect units someone else may now hold. Returns the hold's
-- expiry now, or nil when the bucket has no live hold of `rid` (an expired one is purged,
-- never revived).
local function extend_hold(inv, holds, held, events, sku, bucket, rid, ttl_ms, now)
  purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, nil)
  local qty, stored = hold_get(inv, holds, held, rid)
  if not qty or qty <= 0 then return nil end
  local expires_at = math.max(now + ttl_ms, stored)
  if expires_at > stored then
    -- A hold of the old layout moves to the new one here.
    hold_put(inv, holds, held, rid, qty, expires_at)
  end
  return expires_at
end

-- Turns `rid`'s hold in a bucket into a sale (on_hand and reserved fall, sold rises) with a
-- `committed` outbox entry. Other lapsed holds are purged first, never rid's own: the commit
-- protocol extended it, so if it is still here its units were never given to anyone else.
-- Returns {qty, on_hand, reserved, sold}, or nil without a hold (never held, released, purged,
-- or committed already).
local function commit_hold(inv, holds, held, events, sku, bucket, rid, now)
  purge(inv, holds, held, events, sku, bucket, now, PURGE_LIMIT, rid)
  -- Removing it first also drops a stray entry that held nothing, so it cannot linger.
  local qty = hold_del(inv, holds, held, rid)
  if qty <= 0 then return nil end
  local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold')
  local on_hand = num(lv[1]) - qty
  local reserved = math.max(num(lv[2]) - qty, 0)
  local sold = num(lv[3]) + qty
  redis.call('HSET', inv, 'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold))
  emit(inv, events, {'type', 'committed', 'sku', sku, 'bucket', bucket, 'ref', rid, 'qty', int(qty),
    'on_hand', int(on_hand), 'reserved', int(reserved), 'sold', int(sold), 'at', int(now)})
  return {qty, on_hand, reserved, sold}
end
