--! prelude: base, hold_index, bucket
-- truth_snapshot.lua: one bucket as inventory's durable-truth check compares it with the store
-- (docs/inventory-redis.md, "Durable truth"). Read only: no writes, no purge.
--
-- KEYS[1] bucket  inv:{B}        hash on_hand/reserved/sold/seq (+ buckets on bucket 0)
-- KEYS[2] holds   inv:{B}:holds  holds: shards inv:{B}:h<n> + their expiry index (field hx, or zset inv:{B}:hx); the old zset read
-- KEYS[3] held    inv:{B}:held   the old layout's hash rid -> units (read, drained)
-- KEYS[4] xfer    inv:{B}:xfer   hash transfer id -> to_bucket:units:taken_at_ms
-- (no ARGV)
--
-- Reply: {exists, on_hand, sold, seq, buckets, buckets_max, n_holds, rid1, qty1, ..., xid1, xfer1, ...}
--   exists 0/1 (the bucket hash is there), live holds only (expiry > now) as n_holds pairs,
--   then every pending transfer out as (transfer id, recorded value) pairs.

local inv, holds, held, xfer = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local exists = redis.call('EXISTS', inv)
local lv = redis.call('HMGET', inv, 'on_hand', 'sold', 'seq', 'buckets', 'buckets_max')
local buckets = math.max(num(lv[4]), 1)
local reply = {exists, num(lv[1]), num(lv[2]), num(lv[3]), buckets, math.max(num(lv[5]), buckets), 0}
local n = 0
for _, h in ipairs(hold_all(inv, holds, held)) do
  if h[2] > 0 and h[3] > now then
    reply[#reply + 1] = h[1]
    reply[#reply + 1] = h[2]
    n = n + 1
  end
end
reply[7] = n
local pending = redis.call('HGETALL', xfer)
for i = 1, #pending do reply[#reply + 1] = pending[i] end
return reply
