--! prelude: gcra
-- admission_take_all.lua: one GCRA decision for one call naming several subjects of one
-- operation (a checkout's customer and each of its SKUs), all or nothing: the call is admitted
-- only if every subject admits it, and only then does each limited subject's TAT advance, so a
-- refused call costs no subject anything. Standalone Redis only (the subjects' keys hash to
-- different cluster slots; a cluster decides subject by subject with admission_take.lua).
-- docs/admission.md has the layout.
--
-- KEYS[2*i-1]  subject i's TAT, e.g. "admission:{sku:S1}:checkout:tat" (as admission_take.lua)
-- KEYS[2*i]    subject i's runtime limits, e.g. "admission:{sku:S1}:limits"
-- ARGV[1]      the operation: "checkout" or "reserve"
-- ARGV[2*i]    subject i's default rate, calls per second (0 or less: unlimited)
-- ARGV[2*i+1]  subject i's default burst (integer >= 1)
--
-- Reply: {admitted, retry_after_ms, limited_by, drop}: admitted is 1 or 0; retry_after_ms is 0
-- when admitted, else how long until the refusing subject would admit the call (>= 1);
-- limited_by is the refusing subject's index (the first that refuses, 1-based; 0 when
-- admitted); drop is 1 when a subject's hash flags it as a drop (checkouts go to the waiting
-- room).

local n = #KEYS / 2
if n < 1 or n ~= math.floor(n) or #ARGV ~= 1 + 2 * n then
  return redis.error_reply('ERR admission_take_all: one subject (2 KEYS, 2 arguments) at least, and as many KEYS as arguments')
end
local op = ARGV[1]
if op ~= 'checkout' and op ~= 'reserve' then
  return redis.error_reply('ERR admission_take_all: the operation must be checkout or reserve')
end

local now, drop, next_tats = gcra_now(), 0, {}
for i = 1, n do
  local rate, burst, flagged = gcra_limits(KEYS[2 * i], op, ARGV[2 * i], ARGV[2 * i + 1])
  if flagged == 1 then drop = 1 end
  if rate > 0 then
    local interval = 1000000 / rate
    local new_tat = gcra_tat(KEYS[2 * i - 1], now) + interval
    local allow_at = new_tat - burst * interval
    if now < allow_at then
      return {0, math.max(1, math.ceil((allow_at - now) / 1000)), i, drop}
    end
    next_tats[#next_tats + 1] = {KEYS[2 * i - 1], new_tat}
  end
end
for _, t in ipairs(next_tats) do
  gcra_store(t[1], t[2], now)
end
return {1, 0, 0, drop}
