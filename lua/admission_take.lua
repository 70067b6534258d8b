-- admission_take: one GCRA (generic cell rate algorithm) decision for one subject of one
-- operation: admit the call and advance the subject's theoretical arrival time (TAT), or
-- refuse it and say when the next call would be admitted. docs/admission.md has the layout.
--
-- KEYS[1]  the subject's TAT, e.g. "admission:{sku:S1}:checkout:tat" (microseconds on the
--          Redis clock, expiring once it is in the past)
-- KEYS[2]  the subject's runtime limits, e.g. "admission:{sku:S1}:limits": a hash with
--          fields "<op>:per_second" and "<op>:burst"; absent fields fall back to ARGV.
--          Same hash tag as KEYS[1], so both live on one cluster slot.
-- ARGV[1]  the operation: "checkout" or "reserve" (names the hash fields)
-- ARGV[2]  default rate, calls per second (decimal; 0 or less: unlimited)
-- ARGV[3]  default burst, calls admitted at once on an idle subject (integer >= 1)
--
-- Returns {admitted, retry_after_ms, per_second_milli, drop}: admitted 1 or 0;
-- retry_after_ms is 0 when admitted, else how long until a call would be (>= 1);
-- per_second_milli is the rate in force times 1000 (0: unlimited); drop is 1 when the
-- hash flags the subject as a drop (field "drop" = "1"; checkouts go to the waiting room).

local drop = 0
if redis.call('HGET', KEYS[2], 'drop') == '1' then
  drop = 1
end
local rate = tonumber(redis.call('HGET', KEYS[2], ARGV[1] .. ':per_second') or ARGV[2]) or 0
local burst = tonumber(redis.call('HGET', KEYS[2], ARGV[1] .. ':burst') or ARGV[3]) or 1
if rate <= 0 then
  return {1, 0, 0, drop}
end
if burst < 1 then
  burst = 1
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
local milli = math.floor(rate * 1000)
if now < allow_at then
  return {0, math.max(1, math.ceil((allow_at - now) / 1000)), milli, drop}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, milli, drop}
