--! prelude: base
-- region_transfer_out.lua: the source half of a transfer of a global SKU's units to another
-- region: debit up to `units` idle units and append the `debited` outbox entry that carries
-- them, in one step (docs/regions.md). Units held by live or lapsed-unpurged holds are never
-- given (a conservative read: no purge here).
--
-- KEYS[1] bucket  inv:{S}        hash on_hand/reserved/sold/fence_until (bucket 0)
-- KEYS[2] region  inv:{S}:rg     hash scope/home/allocation...
-- KEYS[3] out     inv:{S}:rgout  hash transfer id -> "to_region:units:debited_at_ms", for good
-- KEYS[4] outbox  inv:{S}:rgq    the region outbox stream
-- ARGV[1] transfer_id  the request's id; a repeat debits nothing more
-- ARGV[2] units        wanted units, integer >= 1
-- ARGV[3] to_region    the destination
--
-- Reply: {moved, debited_at_ms}  units debited now (0: none idle, fenced by SetStock, the
--                                outbox full, or the SKU not global here); a repeated id
--                                answers its recorded units and time and changes nothing.

-- The region outbox refuses new work past this many unpublished entries (the bus is down).
local OUTBOX_LIMIT = 100000

local inv, rg, out, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, units, to = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if id == nil or id == '' then return redis.error_reply('ERR region_transfer_out: transfer_id is empty') end
if not is_int(units) or units < 1 then
  return redis.error_reply('ERR region_transfer_out: units must be an integer >= 1')
end
if to == nil or to == '' or string.find(to, ':', 1, true) then
  return redis.error_reply('ERR region_transfer_out: to_region is empty or has a colon')
end

local recorded = redis.call('HGET', out, id)
if recorded then
  local _, u, at = string.match(recorded, '^(.-):(%-?%d+):(%-?%d+)$')
  return {num(u), num(at)}
end
if redis.call('HGET', rg, 'scope') ~= 'global' then return {0, 0} end
if redis.call('XLEN', outbox) >= OUTBOX_LIMIT then return {0, 0} end
local now = now_ms()
local lv = redis.call('HMGET', inv, 'on_hand', 'reserved', 'fence_until')
local on_hand, reserved = num(lv[1]), num(lv[2])
-- SetStock plans absolute levels: no unit may leave meanwhile.
if num(lv[3]) > now then return {0, 0} end
local moved = math.min(units, math.max(on_hand - reserved, 0))
if moved <= 0 then return {0, 0} end

redis.call('HSET', inv, 'on_hand', int(on_hand - moved))
-- A new version of bucket 0 for the durable truth (its record of on_hand + sold).
redis.call('HINCRBY', inv, 'seq', 1)
redis.call('HSET', out, id, to .. ':' .. int(moved) .. ':' .. int(now))
redis.call('XADD', outbox, '*', 'type', 'debited', 'transfer_id', id, 'to', to,
  'units', int(moved), 'at', int(now))
return {moved, now}
