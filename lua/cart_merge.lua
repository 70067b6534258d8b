--! prelude: base, cart
-- cart_merge.lua: fold an anonymous session's lines into a customer's cart (MergeCarts), once
-- per session cart version. Quantities of a SKU already in the cart are summed and capped at
-- max_qty; new SKUs are appended with the session's price snapshot and added_at until the
-- cart holds max_lines, the rest are dropped. The marker `_m:<session_id>` remembers the
-- session cart version merged, so a retry (say after a crash before the session cart was
-- cleared) adds nothing twice, while a later, changed session cart merges again.
--
-- KEYS[1] cart  cart:{c:<customer>}  hash _v, _u, _m:<session>, l:<sku> (layout in docs/cart.md)
-- ARGV[1] store_checked     '1': the caller found no durable copy, so an absent key is a new
--                           cart; otherwise an absent key answers 'cold' and writes nothing
-- ARGV[2] session_id        the anonymous session, non-empty
-- ARGV[3] session_version   the version of the session cart being merged, integer >= 1
-- ARGV[4] max_lines         most lines a cart may hold, integer >= 1
-- ARGV[5] max_qty           most units one line may hold, integer >= 1
-- ARGV[6] ttl_ms            cart lifetime after this change, integer >= 1
-- ARGV[7..] session lines, five arguments each: sku, qty (>= 1), unit_price_minor,
--           currency, added_at_ms
--
-- Reply: {status, n, {HGETALL of the cart after the call}, {capped skus}, {dropped skus}}
--   {'ok', version, cart, capped, dropped}   merged; the new version
--   {'already_merged', version, cart, {}, {}} this session version was merged before; nothing written
--   {'cold', 0, {}, {}, {}}                  the key is absent and ARGV[1] is not '1'; nothing written

local cart = KEYS[1]
local store_checked, session_id = ARGV[1], ARGV[2]
local session_version, max_lines, max_qty = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl_ms = tonumber(ARGV[6])
if session_id == nil or session_id == '' then return redis.error_reply('ERR cart_merge: session_id is empty') end
if not is_int(session_version) or session_version < 1 then return redis.error_reply('ERR cart_merge: session_version must be an integer >= 1') end
if not is_int(max_lines) or max_lines < 1 then return redis.error_reply('ERR cart_merge: max_lines must be an integer >= 1') end
if not is_int(max_qty) or max_qty < 1 then return redis.error_reply('ERR cart_merge: max_qty must be an integer >= 1') end
if not is_int(ttl_ms) or ttl_ms < 1 then return redis.error_reply('ERR cart_merge: ttl_ms must be an integer >= 1') end
if (#ARGV - 6) % 5 ~= 0 then return redis.error_reply('ERR cart_merge: lines come five arguments each') end
local incoming = {}
for i = 7, #ARGV, 5 do
  local line = {
    sku = ARGV[i], qty = tonumber(ARGV[i + 1]), price = tonumber(ARGV[i + 2]),
    currency = ARGV[i + 3], added_at = tonumber(ARGV[i + 4]),
  }
  if line.sku == '' or not is_int(line.qty) or line.qty < 1 or not is_int(line.price)
    or line.currency == '' or string.find(line.currency, '|', 1, true)
    or not is_int(line.added_at) or line.added_at < 0 then
    return redis.error_reply('ERR cart_merge: bad line for sku ' .. tostring(line.sku))
  end
  incoming[#incoming + 1] = line
end

if store_checked ~= '1' and redis.call('EXISTS', cart) == 0 then
  return {'cold', 0, {}, {}, {}}
end
local marker = '_m:' .. session_id
if tonumber(redis.call('HGET', cart, marker)) == session_version then
  return reply(cart, 'already_merged', version_of(cart), {}, {})
end

-- Plan every line first, then write: a corrupt line aborts before anything changed.
local lines = #line_fields(cart)
local writes, capped, dropped = {}, {}, {}
for _, line in ipairs(incoming) do
  local field = 'l:' .. line.sku
  local existing = redis.call('HGET', cart, field)
  if existing then
    local qty, price, currency, added_at = parse_line(existing)
    if qty == nil then return redis.error_reply('ERR cart_merge: line ' .. field .. ' is corrupt') end
    local sum = qty + line.qty
    if sum > max_qty then
      sum = max_qty
      capped[#capped + 1] = line.sku
    end
    writes[#writes + 1] = field
    writes[#writes + 1] = format_line(sum, price, currency, added_at)
  elseif lines >= max_lines then
    dropped[#dropped + 1] = line.sku
  else
    local qty = line.qty
    if qty > max_qty then
      qty = max_qty
      capped[#capped + 1] = line.sku
    end
    lines = lines + 1
    writes[#writes + 1] = field
    writes[#writes + 1] = format_line(qty, line.price, line.currency, line.added_at)
  end
end

if #writes > 0 then
  redis.call('HSET', cart, unpack(writes))
end
redis.call('HSET', cart, marker, int(session_version))
return reply(cart, 'ok', touch(cart, ttl_ms), capped, dropped)
