-- lib/gcra.lua: the admission limiter's GCRA (generic cell rate algorithm) over one subject's
-- keys, for admission_take.lua, admission_take_all.lua and reserve_batch.lua (docs/admission.md);
-- a prelude (lua/README.md).

-- The limits of operation `op` in force for a subject: its runtime hash `limits` (fields
-- "<op>:per_second", "<op>:burst", "drop") over the defaults. Returns rate (calls a second; 0 or
-- less: unlimited), burst (>= 1) and drop (1 when the hash flags the subject as a drop).
local function gcra_limits(limits, op, default_rate, default_burst)
  local v = redis.call('HMGET', limits, 'drop', op .. ':per_second', op .. ':burst')
  local drop = 0
  if v[1] == '1' then drop = 1 end
  local rate = tonumber(v[2] or default_rate) or 0
  local burst = tonumber(v[3] or default_burst) or 1
  if burst < 1 then burst = 1 end
  return rate, burst, drop
end

-- Redis's clock in microseconds.
local function gcra_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The subject's theoretical arrival time (microseconds) kept at `tat_key`, never before `now`.
local function gcra_tat(tat_key, now)
  local tat = tonumber(redis.call('GET', tat_key) or now) or now
  if tat < now then tat = now end
  return tat
end

-- Stores the subject's new TAT, expiring once it is in the past.
local function gcra_store(tat_key, tat, now)
  redis.call('SET', tat_key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end

-- Decides `calls` calls of operation `op` for one subject arriving together, in arrival order:
-- the first ones are admitted up to what the limit allows, the rest refused with the same delay
-- (once one is refused, so is every later one), so a group spends the budget exactly as the
-- same calls one by one would. Returns admitted (how many, the first ones), retry_after_ms (0
-- when all are admitted, else >= 1: until the first refused one would be), per_second_milli
-- (the rate in force times 1000; 0: unlimited) and drop (1 when the hash flags a drop).
local function gcra_take(tat_key, limits, op, default_rate, default_burst, calls)
  local rate, burst, drop = gcra_limits(limits, op, default_rate, default_burst)
  if rate <= 0 then
    return calls, 0, 0, drop
  end
  local now = gcra_now()
  local interval = 1000000 / rate
  local tat = gcra_tat(tat_key, now)
  local milli = math.floor(rate * 1000)
  local admitted = 0
  while admitted < calls do
    local new_tat = tat + interval
    local allow_at = new_tat - burst * interval
    if now < allow_at then
      if admitted > 0 then
        gcra_store(tat_key, tat, now)
      end
      return admitted, math.max(1, math.ceil((allow_at - now) / 1000)), milli, drop
    end
    tat = new_tat
    admitted = admitted + 1
  end
  gcra_store(tat_key, tat, now)
  return admitted, 0, milli, drop
end
