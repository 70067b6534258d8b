--! prelude: base, hold_index, bucket
-- reservation_forget.lua: delete a reservation record wherever it is kept (its generation hash,
-- its own key, or the key of the layout before). Used when a refusal was read from a Redis that
-- had lost writes: the next attempt must start fresh.
--
-- KEYS[1] record  res:{T}    the rid's record shard (T a tag of the rid's slot; `res:{T}:pooled` on standalone Redis)
-- KEYS[2] legacy  res:{rid}  where the record was kept before (optional)
-- ARGV[1] rid     the reservation id
--
-- Reply: {1} a record was deleted, {0} there was none

local record, legacy, rid = KEYS[1], KEYS[2], ARGV[1]
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_forget: rid is empty') end
local _, rh = rec_get(record, legacy, rid, now_ms())
local found = rh.at ~= nil
rec_del(rh)
-- A legacy key without a state is no record, but garbage all the same.
if legacy then redis.call('DEL', legacy) end
if found then return {1} end
return {0}
