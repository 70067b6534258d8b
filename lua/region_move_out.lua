--! prelude: base
-- region_move_out.lua: the forced debit of an operator move (docs/regions.md), applied by the
-- source region when it hears the `moved` event: the destination credited the units already,
-- so they leave whatever this region holds now, even if on_hand goes negative (it sold them
-- while it was unreachable: the reconciliation reports that as drift). Once per transfer id.
-- The debit is recorded as acknowledged (its credit came first), so it is never re-driven.
--
-- KEYS[1] bucket  inv:{S}        hash on_hand/reserved/sold (bucket 0)
-- KEYS[2] region  inv:{S}:rg     hash scope/home/allocation...
-- KEYS[3] out     inv:{S}:rgout  hash transfer id -> "to_region:units:moved_at_ms", for good
-- KEYS[4] ack     inv:{S}:rgack  hash transfer id -> when its credit was heard
-- ARGV[1] transfer_id  `move/<move_id>`
-- ARGV[2] units        integer >= 1
-- ARGV[3] to_region    the region that credited them
-- ARGV[4] moved_at_ms  when it credited them, integer >= 0
--
-- Reply: {1, on_hand}  debited now (on_hand after, possibly negative)
--        {0, on_hand}  debited before: nothing changed
--        {2, on_hand}  the SKU is not global here: nothing changed

local inv, rg, out, ack = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, units, to, moved_at = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if id == nil or id == '' then return redis.error_reply('ERR region_move_out: transfer_id is empty') end
if not is_int(units) or units < 1 then
  return redis.error_reply('ERR region_move_out: units must be an integer >= 1')
end
if to == nil or to == '' or string.find(to, ':', 1, true) then
  return redis.error_reply('ERR region_move_out: to_region is empty or has a colon')
end
if not is_int(moved_at) or moved_at < 0 then
  return redis.error_reply('ERR region_move_out: moved_at_ms must be an integer >= 0')
end

if redis.call('HEXISTS', out, id) == 1 then return {0, num(redis.call('HGET', inv, 'on_hand'))} end
if redis.call('HGET', rg, 'scope') ~= 'global' then return {2, num(redis.call('HGET', inv, 'on_hand'))} end
redis.call('HINCRBY', inv, 'on_hand', -units)
redis.call('HINCRBY', inv, 'seq', 1)  -- a new version for the durable truth
redis.call('HSET', out, id, to .. ':' .. int(units) .. ':' .. int(moved_at))
redis.call('HSET', ack, id, int(moved_at))
return {1, num(redis.call('HGET', inv, 'on_hand'))}
