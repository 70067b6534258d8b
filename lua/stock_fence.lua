-- stock_fence.lua: raise or lower SetStock's fence on one bucket. While a fence is up (until its
-- lease lapses) rebalance_take moves nothing out of the bucket, so the absolute levels SetStock
-- plans across buckets cannot be undone by units in flight; set_stock.lua writes only under
-- the caller's own live fence.
--
-- KEYS[1] bucket  inv:{B}  hash on_hand/reserved/sold (+ fence, fence_until)
-- ARGV[1] action    "raise" or "lower"
-- ARGV[2] token     the caller's fence token, non-empty
-- ARGV[3] lease_ms  raise: how long the fence stands unless lowered, integer >= 1 (ignored
--                   by lower)
--
-- Reply: raise: {1}  the fence is this caller's until now + lease_ms (replacing any other)
--        lower: {1}  it was this caller's and still live: removed
--               {0}  it was lapsed or someone else's (then it is left alone; a lapsed fence
--                    of this caller is removed): the caller must plan again

-- ---- shared helpers (kept identical in every script; Redis Lua has no include) ----
-- Missing hash fields arrive as false and stored values as strings: both read as integers.
local function num(v)
  local n = tonumber(v)
  if n == nil or n ~= n then return 0 end
  return math.floor(n)
end

-- Arguments are checked before any write so a bad call can never leave half a change.
local function is_int(n)
  return type(n) == 'number' and n == n and n == math.floor(n) and n > -2^53 and n < 2^53
end

-- Explicit formatting: Lua's default number-to-string switches to exponents past 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- Redis's clock, never the caller's: every service instance then agrees on what is expired.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The outbox. Every entry carries the bucket's next sequence number, kept in the bucket hash so
-- it outlives the stream (which outbox_ack deletes once empty): event ids built from it are
-- unique for good. Nothing is ever trimmed unpublished; once OUTBOX_LIMIT entries wait (the bus
-- is down), scripts that start new work refuse with an OUTBOX_FULL error reply instead.
local OUTBOX_LIMIT = 100000
local function outbox_full(events)
  return redis.call('XLEN', events) >= OUTBOX_LIMIT
end
local function emit(inv, events, fields)
  fields[#fields + 1] = 'seq'
  fields[#fields + 1] = int(redis.call('HINCRBY', inv, 'seq', 1))
  redis.call('XADD', events, '*', unpack(fields))
end
-- ---- end of shared helpers ----

local inv = KEYS[1]
local action, token, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
if action ~= 'raise' and action ~= 'lower' then
  return redis.error_reply('ERR stock_fence: action must be raise or lower')
end
if token == nil or token == '' then return redis.error_reply('ERR stock_fence: token is empty') end

local now = now_ms()
if action == 'raise' then
  if not is_int(lease_ms) or lease_ms < 1 then
    return redis.error_reply('ERR stock_fence: lease_ms must be an integer >= 1')
  end
  redis.call('HSET', inv, 'fence', token, 'fence_until', int(now + lease_ms))
  return {1}
end

local f = redis.call('HMGET', inv, 'fence', 'fence_until')
if f[1] ~= token then
  return {0}
end
redis.call('HDEL', inv, 'fence', 'fence_until')
if num(f[2]) <= now then
  return {0}
end
return {1}
