-- outbox_ack.lua: the relay confirms the outbox entries it has published: every entry up to and
-- including the last one it read. The relay always reads the oldest entries (XRANGE from "-"),
-- and stream ids only grow, so what it published is exactly the stream's prefix up to that id:
-- one XTRIM MINID drops it (whole listpack nodes at once) where an XDEL per id rewrote the node
-- it lived in each time. The stream itself goes once empty, so an idle SKU keeps no stream
-- (~500 bytes each) around.
--
-- KEYS[1] events  inv:{B}:events  outbox stream
-- ARGV[1]         the id of the last entry the bus has accepted (none: nothing to delete)
--
-- Reply: {deleted, remaining}  entries deleted now, entries still in the stream (0: key gone)

local events, last = KEYS[1], ARGV[1]
if last == nil then
  return {0, redis.call('XLEN', events)}
end
if not string.match(last, '^%d+%-%d+$') then
  return redis.error_reply('ERR outbox_ack: the last id must be a stream id <ms>-<seq>')
end
local before = redis.call('XLEN', events)
-- Below `last`, then `last` itself (MINID keeps the threshold id).
redis.call('XTRIM', events, 'MINID', '=', last)
redis.call('XDEL', events, last)
local remaining = redis.call('XLEN', events)
-- Same script, same slot: no XADD can land between the XLEN and the DEL.
if remaining == 0 then
  redis.call('DEL', events)
end
return {before - remaining, remaining}
