--! prelude: base, hold_index, bucket
-- reservation_transition.lua: compare-and-set a reservation record's state, optionally
-- updating its expiry, shortages and lines in the same step.
--
-- KEYS[1] record  res:{T}    the rid's record shard (rec_get/rec_put; T a tag of the rid's slot; `res:{T}:pooled` on standalone Redis: the pooled layout)
-- KEYS[2] legacy  res:{rid}  where the record was kept before (read, moved; optional)
-- ARGV[1] from_state    the state the caller believes the record is in
-- ARGV[2] to_state      the state to move to; (from, to) must be an edge of the state machine
--                       or from = to (to update fields, e.g. a new expires_at after Extend)
-- ARGV[3] expires_at    new expiry (Unix ms, Redis clock), or -1 to keep the stored one
-- ARGV[4] shortages     new "sku:req:avail;...", or "" to keep the stored one
-- ARGV[5] require_live  1: refuse unless the stored expires_at > now; 0: no check
-- ARGV[6] retention_ms  PEXPIRE of the record after the write, integer >= 1
-- ARGV[7] lines         new "sku:qty:bucket;...", or "" to keep the stored ones
-- ARGV[8] owner         "": no check; otherwise refuse unless the record's claim
--                       token is this one (a claimer taken over cannot finish its Reserve)
-- ARGV[9] rid           the reservation id
--
-- Reply: {1, state, expires_at, lines}  moved; the values now stored (a refusal keeps no lines:
--                                       those it had are still returned)
--        {0, state, expires_at, lines}  refused, nothing written: the record is not in
--                                       from_state (state "" if there is no record), or
--                                       require_live and it lapsed, or owner is not the
--                                       claimer's; lines say what to clean up
-- An edge outside the state machine is an error reply: it is a caller bug, not an outcome.

-- The state machine of docs/inventory-redis.md; from = to is always allowed.
local EDGES = {
  pending = {reserved = true, rejected = true},
  reserved = {preparing = true, released = true, expired = true},
  -- preparing -> released: Release unwinds a commit interrupted before anything was sold.
  preparing = {committing = true, expired = true, released = true},
  committing = {committed = true},
  committed = {}, rejected = {}, released = {}, expired = {},
}

local record, legacy, rid = KEYS[1], KEYS[2], ARGV[9]
local from_state, to_state = ARGV[1], ARGV[2]
local new_expires_at = tonumber(ARGV[3])
local new_shortages = ARGV[4] or ''
local require_live = ARGV[5]
local retention_ms = tonumber(ARGV[6])
local new_lines = ARGV[7] or ''
local owner = ARGV[8] or ''
if rid == nil or rid == '' then return redis.error_reply('ERR reservation_transition: rid is empty') end
if from_state == nil or EDGES[from_state] == nil then
  return redis.error_reply('ERR reservation_transition: unknown from_state')
end
if to_state == nil or EDGES[to_state] == nil then
  return redis.error_reply('ERR reservation_transition: unknown to_state')
end
if from_state ~= to_state and not EDGES[from_state][to_state] then
  return redis.error_reply('ERR reservation_transition: ' .. from_state .. ' -> ' .. to_state .. ' is not allowed')
end
if not is_int(new_expires_at) or new_expires_at < -1 then
  return redis.error_reply('ERR reservation_transition: expires_at must be an integer >= 0, or -1')
end
if require_live ~= '0' and require_live ~= '1' then
  return redis.error_reply('ERR reservation_transition: require_live must be 0 or 1')
end
if not is_int(retention_ms) or retention_ms < 1 then
  return redis.error_reply('ERR reservation_transition: retention_ms must be an integer >= 1')
end

local now = now_ms()
local r, rh = rec_get(record, legacy, rid, now)
local state, expires_at, lines = r.state or '', num(r.expires_at), r.lines or ''

if state ~= from_state then
  return {0, state, expires_at, lines}
end
if owner ~= '' and r.owner ~= owner then
  return {0, state, expires_at, lines}
end
-- Liveness is judged on the stored expiry, before this call may move it.
if require_live == '1' and expires_at <= now then
  return {0, state, expires_at, lines}
end

r.state = to_state
-- The lease only guards `pending`; dropping it keeps every live reservation's record small.
if to_state ~= 'pending' then r.lease, r.owner = nil, nil end
if new_expires_at ~= -1 then r.expires_at = int(new_expires_at) end
if new_shortages ~= '' then r.shortages = new_shortages end
if new_lines ~= '' then r.lines = new_lines end
rec_put(rh, r, retention_ms)
if new_expires_at ~= -1 then expires_at = new_expires_at end
if new_lines ~= '' then lines = new_lines end
return {1, to_state, expires_at, lines}
