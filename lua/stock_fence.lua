--! prelude: base, hold_index, bucket
-- stock_fence.lua: raise or lower SetStock's fence on one bucket. While a fence is up (until its
-- lease lapses) rebalance_take moves nothing out of the bucket, so the absolute levels SetStock
-- plans across buckets cannot be undone by units in flight; set_stock.lua writes only under
-- the caller's own live fence.
--
-- KEYS[1] bucket  inv:{B}  hash on_hand/reserved/sold (+ fence, fence_until)
-- ARGV[1] action    "raise" or "lower"
-- ARGV[2] token     the caller's fence token, non-empty
-- ARGV[3] lease_ms  raise: how long the fence stands unless lowered, integer >= 1 (ignored
--                   by lower)
--
-- Reply: raise: {1}  the fence is this caller's until now + lease_ms (replacing any other)
--        lower: {1}  it was this caller's and still live: removed
--               {0}  it was lapsed or someone else's (then it is left alone; a lapsed fence
--                    of this caller is removed): the caller must plan again

local inv = KEYS[1]
local action, token, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
if action ~= 'raise' and action ~= 'lower' then
  return redis.error_reply('ERR stock_fence: action must be raise or lower')
end
if token == nil or token == '' then return redis.error_reply('ERR stock_fence: token is empty') end

local now = now_ms()
if action == 'raise' then
  if not is_int(lease_ms) or lease_ms < 1 then
    return redis.error_reply('ERR stock_fence: lease_ms must be an integer >= 1')
  end
  redis.call('HSET', inv, 'fence', token, 'fence_until', int(now + lease_ms))
  return {1}
end

local f = redis.call('HMGET', inv, 'fence', 'fence_until')
if f[1] ~= token then
  return {0}
end
redis.call('HDEL', inv, 'fence', 'fence_until')
if num(f[2]) <= now then
  return {0}
end
return {1}
