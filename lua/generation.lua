-- generation.lua: inventory's generation marker, the cheap check that Redis did not lose
-- writes (docs/inventory-redis.md, "Durable truth").
--
-- KEYS[1] marker  inv:generation  hash id (a fresh uuid per generation), beat (a counter)
-- ARGV[1] action  `beat`: count one more beat; `create`: start generation ARGV[2]
-- ARGV[2] id      the new generation's id (create only)
--
-- Reply: beat:   {1, id, beat} (beat after the increment), or {0} when the marker is missing
--        create: {1, id, 1}
-- Every process beats and remembers the highest beat it saw: a Redis that answers a lower
-- one (a replica that missed writes, a restart from an old snapshot) or no marker at all
-- (FLUSHALL, a restart without persistence) has lost writes.

local marker, action = KEYS[1], ARGV[1]
if action == 'beat' then
  local id = redis.call('HGET', marker, 'id')
  if not id then return {0} end
  return {1, id, redis.call('HINCRBY', marker, 'beat', 1)}
elseif action == 'create' then
  local id = ARGV[2]
  if id == nil or id == '' then return redis.error_reply('ERR generation: id is empty') end
  redis.call('DEL', marker)
  redis.call('HSET', marker, 'id', id, 'beat', 1)
  return {1, id, 1}
end
return redis.error_reply('ERR generation: action must be beat or create')
