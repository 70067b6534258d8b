--! prelude: base, hold_index, bucket
-- reservation_renew.lua: the heartbeat of a running Reserve: push its claim lease forward, only
-- while the record is still `pending` under this claimer's token. A caller whose work outlives
-- one lease keeps its claim, so no retry takes over (and holds a second time) while it lives.
--
-- KEYS[1] record  res:{T}    the rid's record shard (rec_get/rec_put; T a tag of the rid's slot; `res:{T}:pooled` on standalone Redis: the pooled layout)
-- KEYS[2] legacy  res:{rid}  where the record was kept before (read, moved; optional)
-- ARGV[1] owner     the token the caller claimed with, non-empty
-- ARGV[2] lease_ms  the lease from now, integer >= 1
-- ARGV[3] rid       the reservation id
--
-- Reply: {1}  renewed: the lease ends at now + lease_ms
--        {0}  not renewed: the record left `pending`, or another caller took it over

local record, legacy, rid = KEYS[1], KEYS[2], ARGV[3]
local owner, lease_ms = ARGV[1], tonumber(ARGV[2])
if owner == nil or owner == '' then return redis.error_reply('ERR reservation_renew: owner is empty') end
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_renew: rid is empty') end
if not is_int(lease_ms) or lease_ms < 1 then
  return redis.error_reply('ERR reservation_renew: lease_ms must be an integer >= 1')
end

local now = now_ms()
local r, rh = rec_get(record, legacy, rid, now)
if r.state ~= 'pending' or r.owner ~= owner then
  return {0}
end
r.lease = int(now + lease_ms)
rec_put(rh, r, nil)
return {1}
