--! prelude: base
-- lib/hold_index.lua: where a stock bucket's holds live and how the lapsed ones are found (a
-- prelude, after base; lua/README.md). Apart from lib/bucket.lua, which writes the holds, so
-- that a script reading only whether a hold may have lapsed (lib/cart_view.lua) does not pay
-- for defining the bucket's writers on every call (docs/performance.md, session 22).

-- The hold layout. Holds of bucket B live in small hashes `inv:{B}:h<n>` (field = reservation
-- id, value = expiry ms * 1000 + units, or "expiry:units" from 1000 units up), `n` chosen by the
-- id's SHA-1 among the `hs` shards (linear hashing: shards split one at a time, so none outgrows
-- a listpack, even on a hot SKU). While the bucket has one shard, the holds of packed ids (the
-- services' own id shapes) are fields of the bucket hash itself instead of `h0` (lib/bucket.lua,
-- hold_in_bucket); the split to two shards moves them into the keys. The expiry index finds the
-- lapsed ones: a lower bound of each shard's earliest expiry (exact after a purge). While the bucket has one shard, shard 0's bound
-- is the field `hx` of the bucket hash (no key of its own: ~12 bytes a hold at 10 holds a SKU);
-- from two shards on it is the zset `inv:{B}:hx` (shard -> bound), and the field is gone. A zset
-- of a one-shard bucket written before is read while the field is absent and folded into the
-- field by the next hold_put. `hs`/`hn`/`hx` (shards, holds, bound) live in the bucket hash while
-- any hold does. Holds of the old layout (`holds` zset rid -> expiry, `held` hash rid -> units)
-- are still found, purged, released, committed and extended (dual read); every new or extended
-- hold is written in the new layout, so the old keys drain away.
local function hold_keys(holds)
  local base = string.sub(holds, 1, -6)
  return base .. 'hx', base .. 'h'
end
-- The shards that may hold a hold lapsed at `now` (at most `limit`), and whether the bound is
-- the bucket hash's field (else the zset). `bound`: the field as the caller already read it
-- (false when absent); nil reads it here.
local function hold_due(inv, index, now, limit, bound)
  if bound == nil then bound = redis.call('HGET', inv, 'hx') end
  if bound then
    if num(bound) <= now then return {'0'}, true end
    return {}, true
  end
  return redis.call('ZRANGEBYSCORE', index, '-inf', int(now), 'LIMIT', 0, limit), false
end
