--! prelude: base
-- region_place.lua: record where a SKU is administered (docs/regions.md), and for a global SKU
-- land this region's allocation in its stock, once per placement id.
--
-- KEYS[1] bucket  inv:{S}       hash on_hand/reserved/sold (bucket 0)
-- KEYS[2] region  inv:{S}:rg    hash scope/home/allocation/global_total/placement_id
-- KEYS[3] outbox  inv:{S}:rgq   the region outbox stream
-- ARGV[1] scope         'global' or 'regional'
-- ARGV[2] home          the home region
-- ARGV[3] placement_id  global: the placement's id; regional: ignored
-- ARGV[4] allocation    global: this region's units, integer >= 0
-- ARGV[5] global_total  global: the world total, integer >= 0
-- ARGV[6] announce      '1': append a `placed` entry to the outbox (the home region)
-- ARGV[7] allocations   global: the split as 'region=units,...' (copied into the entry)
--
-- Reply: {1, on_hand}          placed now (global: on_hand grew by the allocation)
--        {2, on_hand}          already placed so (same placement id / same home): nothing changed
--        {0, scope, home}      refused: placed otherwise already (another scope, home or id)

-- The region outbox refuses new work past this many unpublished entries (the bus is down).
local OUTBOX_LIMIT = 100000

local inv, rg, outbox = KEYS[1], KEYS[2], KEYS[3]
local scope, home, pid = ARGV[1], ARGV[2], ARGV[3]
local allocation, total, announce, split = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
if scope ~= 'global' and scope ~= 'regional' then
  return redis.error_reply('ERR region_place: scope must be global or regional')
end
if home == nil or home == '' then return redis.error_reply('ERR region_place: home is empty') end
if scope == 'global' then
  if pid == nil or pid == '' then return redis.error_reply('ERR region_place: placement_id is empty') end
  if not is_int(allocation) or allocation < 0 then
    return redis.error_reply('ERR region_place: allocation must be an integer >= 0')
  end
  if not is_int(total) or total < allocation then
    return redis.error_reply('ERR region_place: global_total must be an integer >= allocation')
  end
end

local cur = redis.call('HMGET', rg, 'scope', 'home', 'placement_id')
local cur_scope, cur_home, cur_pid = cur[1], cur[2], cur[3]
if scope == 'regional' then
  if cur_scope == 'global' or (cur_home and cur_home ~= home) then
    return {0, cur_scope or '', cur_home or ''}
  end
  if cur_scope == 'regional' then return {2, num(redis.call('HGET', inv, 'on_hand'))} end
  redis.call('HSET', rg, 'scope', 'regional', 'home', home)
  return {1, num(redis.call('HGET', inv, 'on_hand'))}
end

if cur_scope then
  if cur_scope == 'global' and cur_pid == pid and cur_home == home then
    return {2, num(redis.call('HGET', inv, 'on_hand'))}
  end
  return {0, cur_scope, cur_home or ''}
end
if announce == '1' and redis.call('XLEN', outbox) >= OUTBOX_LIMIT then
  return redis.error_reply('OUTBOX_FULL region_place: the region outbox is full; retry once the bus takes it')
end
local on_hand = num(redis.call('HGET', inv, 'on_hand')) + allocation
redis.call('HSET', inv, 'on_hand', int(on_hand))
redis.call('HINCRBY', inv, 'seq', 1)  -- a new version for the durable truth
redis.call('HSET', rg, 'scope', 'global', 'home', home, 'placement_id', pid,
  'allocation', int(allocation), 'global_total', int(total))
if announce == '1' then
  redis.call('XADD', outbox, '*', 'type', 'placed', 'placement_id', pid, 'home', home,
    'total', int(total), 'allocations', split or '')
end
return {1, on_hand}
