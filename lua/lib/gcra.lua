-- lib/gcra.lua: the admission limiter's GCRA (generic cell rate algorithm) over one subject's
-- keys, for admission_take.lua and admission_take_all.lua (docs/admission.md); a prelude
-- (lua/README.md).

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
