-- cart_restore.lua: re-warm a cart from its durable copy after a Redis miss (Redis lost, or
-- the key expired), only if the key is still absent: a concurrent restore or change wins.
-- A copy whose last change is more than ttl_ms ago is restored without its lines (the cart
-- expired, as it would have in Redis) but with its version, because versions keep growing
-- over an owner's whole life: the store ignores saves that are not newer than what it holds.
--
-- KEYS[1] cart  cart:{<owner>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] version        the durable copy's version, integer >= 1
-- ARGV[2] updated_at_ms  when it last changed, Unix ms, integer >= 0
-- ARGV[3] ttl_ms         cart lifetime after a change, integer >= 1
-- ARGV[4..] lines, five arguments each: sku, qty (>= 1), unit_price_minor, currency,
--           added_at_ms
--
-- Reply: {status, version, {HGETALL of the cart after the call}}
--   {'ok', version}        restored with its lines; expires ttl_ms after updated_at
--   {'expired', version}   restored empty at its version (its lines had outlived ttl_ms)
--   {'exists', version}    the key was there already; nothing written

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
local version, updated_at, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not is_int(version) or version < 1 then return redis.error_reply('ERR cart_restore: version must be an integer >= 1') end
if not is_int(updated_at) or updated_at < 0 then return redis.error_reply('ERR cart_restore: updated_at_ms must be an integer >= 0') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR cart_restore: ttl_ms must be an integer >= 1') end
if (#ARGV - 3) % 5 ~= 0 then return redis.error_reply('ERR cart_restore: lines come five arguments each') end
local writes = {}
for i = 4, #ARGV, 5 do
  local sku, qty, price, currency, added_at =
    ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  if sku == '' or not is_int(qty) or qty < 1 or not is_int(price) or currency == ''
    or string.find(currency, '|', 1, true) or not is_int(added_at) or added_at < 0 then
    return redis.error_reply('ERR cart_restore: bad line for sku ' .. tostring(sku))
  end
  writes[#writes + 1] = 'l:' .. sku
  writes[#writes + 1] = format_line(qty, price, currency, added_at)
end

if redis.call('EXISTS', cart) == 1 then
  return reply(cart, 'exists', version_of(cart))
end
local expires_at = updated_at + ttl_ms
local status = 'ok'
redis.call('HSET', cart, '_v', int(version), '_u', int(updated_at))
if expires_at > now_ms() then
  if #writes > 0 then redis.call('HSET', cart, unpack(writes)) end
  redis.call('PEXPIREAT', cart, int(expires_at))
else
  status = 'expired'
  redis.call('PEXPIRE', cart, int(ttl_ms))
end
return reply(cart, status, version)
