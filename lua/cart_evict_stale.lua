-- cart_evict_stale.lua: after the write-behind saved a cart's acknowledged state to the store,
-- drop the live copy if it is older than that state. A live version below one this process
-- acknowledged means Redis lost writes (a restart without the last writes, a failover, a
-- FLUSHALL followed by a re-warm from the older durable copy): the next read or change then
-- re-warms the cart from the store, which now holds the newer state, instead of answering
-- (or re-persisting) lines that were already removed, e.g. by the clear after a checkout.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] version   the version just saved to the store, integer >= 1
--
-- Reply: {status, n, {}}
--   {'evicted', live_version}  the live copy was older; deleted
--   {'current', live_version}  the live copy is as new or newer (or absent: live_version 0); kept

-- ---- shared helpers (kept identical in every cart script; Redis Lua has no include) ----
-- Arguments are checked before any write so a bad call can never leave half a change.
local function is_int(n)
  return type(n) == 'number' and n == n and n == math.floor(n) and n > -2^53 and n < 2^53
end

-- Explicit formatting: Lua's default number-to-string switches to exponents past 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- Redis's clock, never the caller's: every instance agrees on updated_at and expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A line field `l:<sku>` holds `qty|unit_price_minor|currency|added_at_ms`.
local function parse_line(value)
  local qty, price, currency, at = string.match(value, '^(%d+)|(%-?%d+)|([^|]*)|(%d+)$')
  return tonumber(qty), tonumber(price), currency, tonumber(at)
end

local function format_line(qty, price, currency, at)
  return int(qty) .. '|' .. int(price) .. '|' .. currency .. '|' .. int(at)
end

local function line_fields(cart)
  local lines = {}
  for _, field in ipairs(redis.call('HKEYS', cart)) do
    if string.sub(field, 1, 2) == 'l:' then lines[#lines + 1] = field end
  end
  return lines
end

local function version_of(cart)
  return tonumber(redis.call('HGET', cart, '_v')) or 0
end

-- Every change bumps the version, stamps updated_at and gives the cart its full TTL again.
local function touch(cart, ttl_ms)
  local version = redis.call('HINCRBY', cart, '_v', 1)
  redis.call('HSET', cart, '_u', int(now_ms()))
  redis.call('PEXPIRE', cart, int(ttl_ms))
  return version
end

-- Every reply carries the whole cart as it is after the call, so the caller answers from
-- the same atomic view it changed, without a second round trip.
local function reply(cart, status, n, ...)
  return {status, n, redis.call('HGETALL', cart), ...}
end
-- The cart's version when the call may go on; else nil and the reply that ends it: 'cold'
-- for an absent key the caller has not checked the store for, 'version_conflict' when
-- expected (0 = any) is not the cart's version.
local function checked_version(cart, store_checked, expected)
  if store_checked ~= '1' and redis.call('EXISTS', cart) == 0 then
    return nil, {'cold', 0, {}}
  end
  local version = version_of(cart)
  if expected > 0 and expected ~= version then
    return nil, reply(cart, 'version_conflict', version)
  end
  return version
end

-- ---- end of shared helpers ----

local cart = KEYS[1]
local saved = tonumber(ARGV[1])
if not is_int(saved) or saved < 1 then return redis.error_reply('ERR cart_evict_stale: version must be an integer >= 1') end
if redis.call('EXISTS', cart) == 0 then
  return {'current', 0, {}}
end
local live = version_of(cart)
if live < saved then
  redis.call('DEL', cart)
  return {'evicted', live, {}}
end
return {'current', live, {}}
