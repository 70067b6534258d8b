--! prelude: base
-- region_transfer_in.lua: the destination half of a transfer: credit the units once per
-- transfer id and append the `credited` outbox entry that acknowledges it to the source. A
-- repeat (a re-driven or redelivered debit) credits nothing and acknowledges again.
--
-- KEYS[1] bucket  inv:{S}        hash on_hand/reserved/sold (bucket 0)
-- KEYS[2] region  inv:{S}:rg     hash scope/home/allocation...
-- KEYS[3] in      inv:{S}:rgin   hash transfer id -> "from_region:units:debited_at_ms:credited_at_ms", for good
-- KEYS[4] outbox  inv:{S}:rgq    the region outbox stream
-- ARGV[1] transfer_id   the source's id
-- ARGV[2] units         integer >= 1
-- ARGV[3] from_region   the source
-- ARGV[4] debited_at_ms when the source debited, integer >= 0
--
-- Reply: {1, on_hand}  credited now
--        {0, on_hand}  credited before: nothing changed (acknowledged again)
-- Error reply `OUTBOX_FULL ...` (nothing changed) while OUTBOX_LIMIT entries wait.

-- The region outbox refuses new work past this many unpublished entries (the bus is down).
local OUTBOX_LIMIT = 100000

local inv, rg, inn, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, units, from, debited_at = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if id == nil or id == '' then return redis.error_reply('ERR region_transfer_in: transfer_id is empty') end
if not is_int(units) or units < 1 then
  return redis.error_reply('ERR region_transfer_in: units must be an integer >= 1')
end
if from == nil or from == '' or string.find(from, ':', 1, true) then
  return redis.error_reply('ERR region_transfer_in: from_region is empty or has a colon')
end
if not is_int(debited_at) or debited_at < 0 then
  return redis.error_reply('ERR region_transfer_in: debited_at_ms must be an integer >= 0')
end
if redis.call('XLEN', outbox) >= OUTBOX_LIMIT then
  return redis.error_reply('OUTBOX_FULL region_transfer_in: the region outbox is full; retry once the bus takes it')
end

local now = now_ms()
local recorded = redis.call('HGET', inn, id)
local fresh = 0
local credited_at = now
if recorded then
  local _, u, _, at = string.match(recorded, '^(.-):(%-?%d+):(%-?%d+):(%-?%d+)$')
  units, credited_at = num(u), num(at)
else
  redis.call('HINCRBY', inv, 'on_hand', units)
  redis.call('HINCRBY', inv, 'seq', 1)  -- a new version for the durable truth
  redis.call('HSET', inn, id, from .. ':' .. int(units) .. ':' .. int(debited_at) .. ':' .. int(now))
  fresh = 1
end
redis.call('XADD', outbox, '*', 'type', 'credited', 'transfer_id', id, 'from', from,
  'units', int(units), 'debited_at', int(debited_at), 'at', int(credited_at))
return {fresh, num(redis.call('HGET', inv, 'on_hand'))}
