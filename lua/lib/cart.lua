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

-- cart_add.lua's change (its ARGV, its replies), for it and cart_add_viewed.lua: add `qty` units
-- of `sku` to the cart, summing with an existing line; a new line snapshots `price`/`currency`
-- and Redis's now as added_at. Caps and the advisory stock check are settled against the line
-- as it is inside the script. `name` prefixes the errors of an argument out of range.
local function add_line(name, cart, store_checked, expected, sku, qty, price, currency, available,
                        max_lines, max_qty, ttl_ms)
  local function refuse(what) return redis.error_reply('ERR ' .. name .. ': ' .. what) end
  if not is_int(expected) or expected < 0 then return refuse('expected_version must be an integer >= 0') end
  if sku == nil or sku == '' then return refuse('sku is empty') end
  if not is_int(qty) or qty < 1 then return refuse('qty must be an integer >= 1') end
  if not is_int(price) or price < 0 then return refuse('unit_price_minor must be an integer >= 0') end
  if currency == nil or currency == '' or string.find(currency, '|', 1, true) then
    return refuse('currency must be a code without |')
  end
  if not is_int(available) then return refuse('available must be an integer') end
  if not is_int(max_lines) or max_lines < 1 then return refuse('max_lines must be an integer >= 1') end
  if not is_int(max_qty) or max_qty < 1 then return refuse('max_qty must be an integer >= 1') end
  if not is_int(ttl_ms) or ttl_ms < 1 then return refuse('ttl_ms must be an integer >= 1') end

  local _, answer = checked_version(cart, store_checked, expected)
  if answer then return answer end

  local field = 'l:' .. sku
  local existing = redis.call('HGET', cart, field)
  local line_qty, line_price, line_currency, added_at = 0, price, currency, nil
  if existing then
    line_qty, line_price, line_currency, added_at = parse_line(existing)
    if line_qty == nil then return refuse('line ' .. field .. ' is corrupt') end
  elseif #line_fields(cart) >= max_lines then
    return reply(cart, 'line_cap', max_lines)
  end
  local new_qty = line_qty + qty
  if new_qty > max_qty then
    return reply(cart, 'quantity_cap', line_qty)
  end
  if new_qty > available then
    return reply(cart, 'out_of_stock', line_qty)
  end

  redis.call('HSET', cart, field, format_line(new_qty, line_price, line_currency, added_at or now_ms()))
  return reply(cart, 'ok', touch(cart, ttl_ms))
end
