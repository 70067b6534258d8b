--! prelude: base, bucket
-- reservation_renew.lua: the heartbeat of a running Reserve: push its claim lease forward, only
-- while the record is still `pending` under this claimer's token. A caller whose work outlives
-- one lease keeps its claim, so no retry takes over (and holds a second time) while it lives.
--
-- KEYS[1] record  res:{rid}  state/fp/expires_at/lines/shortages/lease/owner (rec_get/rec_put)
-- ARGV[1] owner     the token the caller claimed with, non-empty
-- ARGV[2] lease_ms  the lease from now, integer >= 1
--
-- Reply: {1}  renewed: the lease ends at now + lease_ms
--        {0}  not renewed: the record left `pending`, or another caller took it over

local record = KEYS[1]
local owner, lease_ms = ARGV[1], tonumber(ARGV[2])
if owner == nil or owner == '' then return redis.error_reply('ERR reservation_renew: owner is empty') end
if not is_int(lease_ms) or lease_ms < 1 then
  return redis.error_reply('ERR reservation_renew: lease_ms must be an integer >= 1')
end

local r = rec_get(record)
if r.state ~= 'pending' or r.owner ~= owner then
  return {0}
end
r.lease = int(now_ms() + lease_ms)
rec_put(record, r, nil)
return {1}
