--! prelude: base, hold_index, bucket
-- availability.lua: one bucket's levels as of Redis's now, without writing anything (safe on
-- a read replica: run it with EVALSHA_RO / EVAL_RO).
--
-- KEYS[1] bucket  inv:{B}        hash on_hand/reserved/sold (+ buckets on bucket 0)
-- KEYS[2] holds   inv:{B}:holds  holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held   the old layout's hash rid -> units (read, drained)
-- (no ARGV)
--
-- Reply: {on_hand, reserved_live, sold, buckets, buckets_max}
--   reserved_live = reserved minus the units of holds that have lapsed but are not purged yet
--   (at most 1000 of them per call: the rest still count until purged);
--   buckets is 1 when not stored (plain SKU, or any bucket other than 0); buckets_max is the
--   widest layout the SKU ever had (sum over that many buckets). An unknown SKU answers
--   {0, 0, 0, 1, 1}.

local inv, holds, held = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()

local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'sold', 'buckets', 'buckets_max', 'hs')
local on_hand, reserved, sold, buckets = num(lv[1]), num(lv[2]), num(lv[3]), num(lv[4])
if buckets < 1 then buckets = 1 end
local buckets_max = math.max(num(lv[5]), buckets)

-- Instead of purging (a write), subtract what the purge would give back: for at most
-- LAPSED_LIMIT holds, so a read after a wave of abandoned holds stays O(limit). Lapsed holds past
-- the limit still count as reserved (a conservative answer) until a purge or the sweeper.
local LAPSED_LIMIT = 1000
local lapsed, seen = 0, 0
local index, shard = hold_keys(holds)
local shards = math.max(num(lv[6]), 1)
for _, n in ipairs((hold_due(inv, index, now, LAPSED_LIMIT))) do
  if seen >= LAPSED_LIMIT then break end
  local entries = hold_entries(inv, shard, n, shards)
  for i = 1, #entries, 3 do
    local qty, e = hold_unpack(entries[i + 2])
    if e <= now and seen < LAPSED_LIMIT then
      lapsed = lapsed + qty
      seen = seen + 1
    end
  end
end
-- Holds of the old layout (a zset and a hash), within what is left of the limit.
local due = {}
if seen < LAPSED_LIMIT then
  due = redis.call('ZRANGEBYSCORE', holds, '-inf', int(now), 'LIMIT', 0, LAPSED_LIMIT - seen)
end
-- HMGET in slices: unpack() of a huge list would overflow the Lua C stack.
local SLICE = 500
for i = 1, #due, SLICE do
  local last = math.min(i + SLICE - 1, #due)
  local qtys = redis.call('HMGET', held, unpack(due, i, last))
  for _, q in ipairs(qtys) do lapsed = lapsed + num(q) end
end

return {on_hand, math.max(reserved - lapsed, 0), sold, buckets, buckets_max}
