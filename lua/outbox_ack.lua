-- outbox_ack.lua: the relay confirms outbox entries it has published; they are deleted, and
-- the stream itself once empty, so an idle SKU keeps no stream (~500 bytes each) around.
--
-- KEYS[1] events  inv:{B}:events  outbox stream
-- ARGV[1..n]      stream entry ids the bus has accepted
--
-- Reply: {deleted, remaining}  entries deleted now, entries still in the stream (0: key gone)

local events = KEYS[1]
if #ARGV == 0 then
  return {0, redis.call('XLEN', events)}
end
local deleted = redis.call('XDEL', events, unpack(ARGV))
local remaining = redis.call('XLEN', events)
-- Same script, same slot: no XADD can land between the XLEN and the DEL.
if remaining == 0 then
  redis.call('DEL', events)
end
return {deleted, remaining}
