--! prelude: base
-- region_move_in.lua: the receiving half of an operator move of a dead region's units of a
-- global SKU (MoveRegionUnits, docs/regions.md): credit the units once per transfer id and
-- append the `moved` outbox entry (the forced debit for the source and the audit record) in
-- one step. The credit comes first: the source debits when it hears the event.
--
-- KEYS[1] bucket  inv:{S}        hash on_hand/reserved/sold (bucket 0)
-- KEYS[2] region  inv:{S}:rg     hash scope/home/allocation...
-- KEYS[3] in      inv:{S}:rgin   hash transfer id -> "from_region:units:moved_at_ms:moved_at_ms", for good
-- KEYS[4] outbox  inv:{S}:rgq    the region outbox stream
-- ARGV[1] transfer_id  `move/<move_id>`
-- ARGV[2] units        integer >= 1
-- ARGV[3] from_region  the dead region
-- ARGV[4] operator     who (may be empty)
-- ARGV[5] reason       why (non-empty)
--
-- Reply: {1, units, moved_at_ms, on_hand}  credited now
--        {0, units, moved_at_ms, on_hand}  credited before with the same figures: nothing changed
--        {2, units, moved_at_ms, on_hand}  this id was used for another source or units: nothing changed
--        {3, 0, 0, on_hand}                the SKU is not global here: nothing changed
-- Error reply `OUTBOX_FULL ...` (nothing changed) while OUTBOX_LIMIT entries wait.

-- The region outbox refuses new work past this many unpublished entries (the bus is down).
local OUTBOX_LIMIT = 100000

local inv, rg, inn, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, units, from, operator, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
if id == nil or id == '' then return redis.error_reply('ERR region_move_in: transfer_id is empty') end
if not is_int(units) or units < 1 then
  return redis.error_reply('ERR region_move_in: units must be an integer >= 1')
end
if from == nil or from == '' or string.find(from, ':', 1, true) then
  return redis.error_reply('ERR region_move_in: from_region is empty or has a colon')
end
if reason == nil or reason == '' then return redis.error_reply('ERR region_move_in: reason is empty') end

local recorded = redis.call('HGET', inn, id)
if recorded then
  local f, u, at = string.match(recorded, '^(.-):(%-?%d+):(%-?%d+):')
  local same = (f == from and num(u) == units) and 0 or 2
  return {same, num(u), num(at), num(redis.call('HGET', inv, 'on_hand'))}
end
if redis.call('HGET', rg, 'scope') ~= 'global' then
  return {3, 0, 0, num(redis.call('HGET', inv, 'on_hand'))}
end
if redis.call('XLEN', outbox) >= OUTBOX_LIMIT then
  return redis.error_reply('OUTBOX_FULL region_move_in: the region outbox is full; retry once the bus takes it')
end

local now = now_ms()
redis.call('HINCRBY', inv, 'on_hand', units)
redis.call('HINCRBY', inv, 'seq', 1)  -- a new version for the durable truth
redis.call('HSET', inn, id, from .. ':' .. int(units) .. ':' .. int(now) .. ':' .. int(now))
redis.call('XADD', outbox, '*', 'type', 'moved', 'transfer_id', id, 'from', from,
  'units', int(units), 'at', int(now), 'operator', operator or '', 'reason', reason)
return {1, units, now, num(redis.call('HGET', inv, 'on_hand'))}
