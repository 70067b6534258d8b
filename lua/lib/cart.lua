--! prelude: base
-- lib/cart.lua: the cart hash's lines, version and reply (a prelude, after base; lua/README.md).

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
