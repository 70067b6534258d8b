--! prelude: gcra
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
-- ARGV[4]  optional: calls decided at once, in arrival order (integer 1..1000, default 1; the
--          inventory coalesces the one-line Reserves of a SKU that arrive together)
--
-- Returns {admitted, retry_after_ms, per_second_milli, drop}: admitted is how many of the
-- calls are admitted, always the first ones (calls decided at one instant: once one is
-- refused, so is every later one), so 1 or 0 for a single call; retry_after_ms is 0 when
-- all are admitted, else how long until the first refused one would be (>= 1);
-- per_second_milli is the rate in force times 1000 (0: unlimited); drop is 1 when the
-- hash flags the subject as a drop (field "drop" = "1"; checkouts go to the waiting room).

local calls = tonumber(ARGV[4] or '1')
if calls == nil or calls ~= math.floor(calls) or calls < 1 or calls > 1000 then
  return redis.error_reply('ERR admission_take: calls must be an integer 1..1000')
end
return {gcra_take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], calls)}
