--! prelude: base, cart
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
