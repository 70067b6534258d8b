#!/usr/bin/env bash
# Smoke test of every Lua script (inventory, cart, admission, regions) against a throwaway
# redis-server, and a check that the scripts share their helpers through the preludes in lua/lib/
# (lua/README.md) instead of carrying copies of them.
#
#   lua/smoke.sh [port]      (default 6399; the port must be free)
#
# Starts its own redis-server (no persistence) on the port, runs each script, assembled as the
# services load it (its preludes, then the script), through `redis-cli --eval` exactly as
# docs/inventory-redis.md lays out KEYS and ARGV, checks the replies and the resulting keys, and
# stops the server again. Exits non-zero on the first mismatch. Needs redis-server and
# redis-cli >= 7.0.
set -euo pipefail

PORT="${1:-6399}"
LUA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIDFILE="$(mktemp -u "${TMPDIR:-/tmp}/holdfast-smoke-$PORT.XXXXXX.pid")"
BODIES=""

# assemble FILE -> the body a service loads for lua/FILE: the preludes its first line names
# (`--! prelude: a, b`), in that order, then the file itself. The Rust twin is
# holdfast_platform::redis::prelude::assemble (same rules: known names, each after the ones
# it needs, none twice).
assemble() {
  local file=$1 names name need seen=" "
  names="$(sed -n '1s/^--! prelude: *//p' "$file" | tr ',' ' ')"
  for name in $names; do
    [[ -f "$LUA/lib/$name.lua" ]] || { echo "$file: unknown prelude '$name'" >&2; return 1; }
    [[ "$seen" != *" $name "* ]] || { echo "$file: prelude '$name' named twice" >&2; return 1; }
    for need in $(sed -n '1s/^--! prelude: *//p' "$LUA/lib/$name.lua" | tr ',' ' '); do
      [[ "$seen" == *" $need "* ]] || { echo "$file: prelude '$name' needs '$need' before it" >&2; return 1; }
    done
    seen="$seen$name "
    cat "$LUA/lib/$name.lua"
  done
  cat "$file"
}

# Never flush somebody else's Redis.
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  echo "port $PORT already answers; pass a free port" >&2
  exit 2
fi
redis-server --port "$PORT" --save '' --appendonly no --daemonize yes --pidfile "$PIDFILE" >/dev/null
stop() {
  local pid
  if [[ -s "$PIDFILE" ]]; then
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    # Wait for it to go, so the port is free again when we return.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  [[ -z "$BODIES" ]] || rm -rf "$BODIES"
}
trap stop EXIT
# The assembled scripts, as the services load them (see assemble).
BODIES="$(mktemp -d "${TMPDIR:-/tmp}/holdfast-smoke-$PORT.XXXXXX")"
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

rc() { redis-cli -p "$PORT" "$@" 2>&1 | tr '\n' ' ' | sed 's/ *$//'; }
# ev SCRIPT KEY... , ARG...   -> the reply on one line, elements separated by spaces
ev() { local f=$1; shift; redis-cli -p "$PORT" --eval "$BODIES/$f.lua" "$@" 2>&1 | tr '\n' ' ' | sed 's/ *$//'; }
now_ms() { local t; t=($(redis-cli -p "$PORT" time)); echo $(( t[0] * 1000 + t[1] / 1000 )); }
# past MS -> returns once the Redis server's clock is past MS (a hold's expiry), at most 10 s.
past() { for _ in $(seq 200); do (( $(now_ms) > $1 )) && return 0; sleep 0.05; done; fail "clock never passed $1"; }
# Paired holds get this TTL (ms): long enough that the second reserve cannot lazily expire
# the first even when a loaded machine takes a while between the two redis-cli runs.
PAIR_TTL=1000

n=0
pass() { n=$((n + 1)); printf 'ok %3d  %s\n' "$n" "$1"; }
fail() { printf 'FAIL     %s\n' "$1" >&2; exit 1; }
expect() { # name want got
  [[ "$3" == "$2" ]] || fail "$1: want [$2] got [$3]"
  pass "$1"
}
expect_re() { # name regex got
  [[ "$3" =~ $2 ]] || fail "$1: want /$2/ got [$3]"
  pass "$1"
}
# last_event STREAM -> "field value ..." of the newest entry, without its id
last_event() { redis-cli -p "$PORT" xrevrange "$1" + - count 1 | tail -n +2 | tr '\n' ' ' | sed 's/ *$//'; }
# events_of STREAM TYPE -> how many entries of that type
events_of() { redis-cli -p "$PORT" xrange "$1" - + | grep -cx "$2" || true; }

# ---------------------------------------------------------------- static checks
# Every script assembles (its preludes exist, in an order that gives each what it needs).
for path in "$LUA"/*.lua; do
  assemble "$path" >"$BODIES/$(basename "$path")" || fail "$(basename "$path"): does not assemble"
done
pass "every script assembles with its preludes"
# Names (functions and constants) each prelude defines at its top level.
defs() { sed -nE 's/^local (function )?([A-Za-z_][A-Za-z0-9_]*).*/\2/p' "$1"; }
for path in "$LUA"/*.lua; do
  f="$(basename "$path")"
  ! grep -q -e '^-- ---- shared helpers' -e '^-- ---- helpers' "$path" || fail "$f: carries a helper block (use a prelude)"
  names=" $(sed -n '1s/^--! prelude: *//p' "$path" | tr ',' ' ') "
  own=" $(defs "$path" | tr '\n' ' ') "
  code="$(sed 's/--.*$//' "$path")"
  for lib in "$LUA"/lib/*.lua; do
    p="$(basename "$lib" .lua)"
    for name in $(defs "$lib"); do
      if [[ "$own" == *" $name "* ]]; then
        # A copy of a prelude's function, or a shadow of a prelude the script names.
        grep -q "^local function $name(" "$path" && fail "$f: defines $name(), a function of lib/$p.lua"
        [[ "$names" != *" $p "* ]] || fail "$f: redefines $name of lib/$p.lua, which it names"
      elif grep -qE "(^|[^A-Za-z0-9_.:])$name([^A-Za-z0-9_]|$)" <<<"$code"; then
        [[ "$names" == *" $p "* ]] || fail "$f: uses $name of lib/$p.lua without naming it (--! prelude: $p)"
      fi
    done
  done
done
pass "no script carries a copy of a prelude; every script using a helper names its prelude"
# The outbox is never trimmed (an unpublished event is never dropped) and every entry carries
# the bucket's sequence number: the only XADDs are the ones inside the shared emit() and
# emit_reserved_n() (a batch's holds).
expect "no script trims a stream" "0" "$(cat "$LUA"/*.lua "$LUA"/lib/*.lua | grep -c "MAXLEN" || true)"
# The region scripts write the region's own transfer outbox (docs/regions.md), not a bucket's.
xadds=$(ls "$LUA"/*.lua "$LUA"/lib/*.lua | grep -v '/region_' | xargs cat | grep -c "redis.call('XADD'")
region_xadds=$(cat "$LUA"/region_*.lua | grep -c "redis.call('XADD'")
expect "region scripts append only to their outbox" "$region_xadds" "$(cat "$LUA"/region_*.lua | grep -c "redis.call('XADD', outbox, '\*'")"
emits=$(cat "$LUA"/*.lua "$LUA"/lib/*.lua | grep -c -e "^  redis.call('XADD', events, '\*', unpack(fields))$" \
  -e "^  redis.call('XADD', events, '\*', 'type', 'reserved_n', ")
expect "every XADD is the one in emit() or emit_reserved_n()" "$xadds" "$emits"
for f in reserve reserve_single commit release extend set_stock adjust_stock availability sweep \
         rebalance_take rebalance_give reservation_claim reservation_transition stock_fence \
         reservation_renew reservation_forget reservation_extend reservation_commit reservation_reserve truth_snapshot \
         truth_rebuild; do
  [[ -f "$LUA/$f.lua" ]] || fail "missing $f.lua"
  grep -q "redis.call('TIME')" "$BODIES/$f.lua" || fail "$f.lua does not read Redis TIME"
done
pass "all 21 bucket scripts present and read TIME"

# Keys of one bucket: kk TAG -> the key list of the 4-key hold scripts
kk() { echo "inv:{$1} inv:{$1}:holds inv:{$1}:held inv:{$1}:events"; }
# The hold layout is read through the scripts' own helpers (the base, hold_index and bucket
# preludes):
# hold TAG RID -> "units expiry" of RID's hold, empty if none; has TAG RID -> 1/0;
# nholds TAG -> how many holds the bucket keeps (either layout).
layout() { cat "$LUA/lib/base.lua" "$LUA/lib/hold_index.lua" "$LUA/lib/bucket.lua"; }
hold() { rc eval "$(layout)
local q, e = hold_get(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) if q then return {q, e} end return {}" \
  3 "inv:{$1}" "inv:{$1}:holds" "inv:{$1}:held" "$2"; }
has() { [[ -n "$(hold "$1" "$2")" ]] && echo 1 || echo 0; }
# Reservation records: every rid here shares the record shard res:{s} (the service picks it by
# the rid's slot; any key works on one server); rk RID -> the KEYS of a record script (the
# shard, then the legacy key res:{RID} of the layout before).
rk() { echo "res:{s} res:{$1}"; }
# recf RID FIELD... -> the record's fields (read through rec_get), space separated
recf() { local rid=$1; shift; rc eval "$(layout)
local r, out = rec_get(KEYS[1], KEYS[2], ARGV[1], now_ms()), {} for i = 2, #ARGV do out[i - 1] = r[ARGV[i]] or '' end return out" \
  2 $(rk "$rid") "$rid" "$@"; }
# recset RID FIELD VALUE -> sets one field of the record (rec_put, kept as long as it was)
recset() { rc eval "$(layout)
local r, h = rec_get(KEYS[1], KEYS[2], ARGV[1], now_ms()) r[ARGV[2]] = ARGV[3] rec_put(h, r, nil) return 1" \
  2 $(rk "$1") "$1" "$2" "$3" >/dev/null; }
# recat RID -> "KEY PTTL" of where the record is kept (empty if nowhere)
recat() { rc eval "$(layout)
local _, h = rec_get(KEYS[1], KEYS[2], ARGV[1], now_ms()) if not h.at then return {} end
return {h.at, redis.call('PTTL', h.at)}" 2 $(rk "$1") "$1"; }
nholds() { rc eval "$(layout)
return #hold_all(KEYS[1], KEYS[2], KEYS[3])" 3 "inv:{$1}" "inv:{$1}:holds" "inv:{$1}:held"; }

# ---------------------------------------------------------------- set_stock + reserve
rc flushall >/dev/null
K=$(kk A)
expect "set_stock A=10" "1 10 0 0" "$(ev set_stock $K , 10 1 A 0)"
expect "set_stock stores buckets on bucket 0" "1" "$(rc hget 'inv:{A}' buckets)"
expect_re "stock_set event" "^type stock_set sku A bucket 0 ref  qty 10 on_hand 10 reserved 0 sold 0 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{A}:events')"
expect "bad qty is an error" "ERR reserve: qty must be an integer >= 1" "$(ev reserve $K , r1 0 60000 A 0)"
expect "bad qty wrote nothing" "0" "$(nholds A)"
# reserve_single: KEYS record shard, bucket, holds, held, events, index shard, legacy; ARGV rid, qty,
# ttl_ms, sku, bucket_index, fingerprint, lines, retention_ms, tag, rejected_retention_ms
expect "reserve_single: a bad bucket index is an error" "ERR reserve_single: bucket_index must be an integer >= 0" \
  "$(ev reserve_single res:{s}:pooled $K inv:expiries:0 res:{rs1} , rs1 1 60000 A x 0123456789abcdef '[["A",1,0]]' 60000 A 60000)"
expect "a bad bucket index wrote nothing" "0 " "$(nholds A) $(recf rs1 state)"

t0=$(now_ms)
out=$(ev reserve $K , r1 3 60000 A 0)
expect_re "reserve r1 3" "^1 [0-9]{13} 10 3$" "$out"
exp1=$(cut -d' ' -f2 <<<"$out")
(( exp1 >= t0 + 60000 && exp1 <= t0 + 61000 )) || fail "reserve r1: expiry $exp1 not ~ now+60s ($t0)"
pass "reserve r1 expiry = Redis now + ttl"
expect "hold r1: units, expiry" "3 $exp1" "$(hold A r1)"
expect "hold r1 is in a listpack shard" "listpack 1" "$(rc object encoding 'inv:{A}:h0') $(rc hget 'inv:{A}' hn)"
expect_re "reserved event" "^type reserved sku A bucket 0 ref r1 qty 3 on_hand 10 reserved 3 sold 0 at [0-9]{13} expires_at $exp1 seq [0-9]+$" \
  "$(last_event 'inv:{A}:events')"
len=$(rc xlen 'inv:{A}:events')
expect "reserve r1 again is idempotent" "1 $exp1 10 3" "$(ev reserve $K , r1 3 60000 A 0)"
expect "idempotent repeat holds nothing new" "3 3 $len" \
  "$(rc hget 'inv:{A}' reserved) $(hold A r1 | cut -d' ' -f1) $(rc xlen 'inv:{A}:events')"
expect "reserve r2 8 is short" "0 7" "$(ev reserve $K , r2 8 60000 A 0)"
expect "shortage wrote nothing" "0 3 $len" \
  "$(has A r2) $(rc hget 'inv:{A}' reserved) $(rc xlen 'inv:{A}:events')"
expect "reserve on an unstocked (or lost) bucket answers -1" "-1" "$(ev reserve $(kk NOPE) , x 1 60000 NOPE 0)"
expect "unknown sku left no keys" "0" "$(rc exists 'inv:{NOPE}' 'inv:{NOPE}:held' 'inv:{NOPE}:holds' 'inv:{NOPE}:events' 'inv:{NOPE}:hx' 'inv:{NOPE}:h0')"
expect "availability A" "10 3 0 1 1" "$(ev availability inv:{A} inv:{A}:holds inv:{A}:held)"
expect "availability of unknown sku" "0 0 0 1 1" "$(ev availability inv:{NOPE} inv:{NOPE}:holds inv:{NOPE}:held)"

# ---------------------------------------------------------------- expiry
expect_re "reserve r3 4 ttl 50" "^1 [0-9]{13} 10 7$" "$(ev reserve $K , r3 4 50 A 0)"
sleep 0.2
expect "availability sees r3 lapsed" "10 3 0 1 1" "$(ev availability inv:{A} inv:{A}:holds inv:{A}:held)"
expect "availability wrote nothing" "7 4" "$(rc hget 'inv:{A}' reserved) $(hold A r3 | cut -d' ' -f1)"
body="$(cat "$BODIES/availability.lua")"
expect "availability runs under EVAL_RO" "10 3 0 1 1" \
  "$(rc eval_ro "$body" 3 'inv:{A}' 'inv:{A}:holds' 'inv:{A}:held')"
expect_re "reserve r4 7 gets r3's units back" "^1 [0-9]{13} 10 10$" "$(ev reserve $K , r4 7 60000 A 0)"
expect "r3 purged" "0" "$(has A r3)"
expect "one expired event" "1" "$(events_of 'inv:{A}:events' expired)"
expect_re "expired event fields" "type expired sku A bucket 0 ref r3 qty 4 on_hand 10 reserved 3 sold 0 at [0-9]{13}" \
  "$(rc xrange 'inv:{A}:events' - +)"

# ---------------------------------------------------------------- commit / release
expect "commit r1" "1 3 7 7 3" "$(ev commit $K , r1 A 0)"
expect_re "committed event" "^type committed sku A bucket 0 ref r1 qty 3 on_hand 7 reserved 7 sold 3 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{A}:events')"
expect "commit r1 twice" "0" "$(ev commit $K , r1 A 0)"
expect "commit unknown rid" "0" "$(ev commit $K , zz A 0)"
expect "release r4" "1 7" "$(ev release $K , r4 A 0)"
expect_re "released event" "^type released sku A bucket 0 ref r4 qty 7 on_hand 7 reserved 0 sold 3 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{A}:events')"
expect "release r4 twice" "0" "$(ev release $K , r4 A 0)"
expect_re "retry of the expired rid r3 holds anew" "^1 [0-9]{13} 7 1$" "$(ev reserve $K , r3 1 60000 A 0)"
expect "release r3" "1 1" "$(ev release $K , r3 A 0)"
expect "levels after commit+release" "7 0 3" "$(rc hmget 'inv:{A}' on_hand reserved sold)"
expect "no holds left, no layout keys or fields" "0 0 0" \
  "$(nholds A) $(rc exists 'inv:{A}:hx' 'inv:{A}:h0') $(rc hmget 'inv:{A}' hs hn hx | wc -w)"

# commit spares its own lapsed hold (a committing hold was extended) but purges the others
KC=$(kk C)
ev set_stock $KC , 10 1 C 0 >/dev/null
ev reserve $KC , c1 2 $PAIR_TTL C 0 >/dev/null
out=$(ev reserve $KC , c2 3 $PAIR_TTL C 0)
past "$(cut -d' ' -f2 <<<"$out")"
expect "commit of a lapsed, unpurged hold still commits" "1 2 8 0 2" "$(ev commit $KC , c1 C 0)"
expect "commit purged the other lapsed hold" "1 0" "$(events_of 'inv:{C}:events' expired) $(nholds C)"
ev reserve $KC , c3 1 50 C 0 >/dev/null
sleep 0.2
expect "release of a lapsed hold is a no-op (it expired)" "0" "$(ev release $KC , c3 C 0)"
expect "lapsed release reported as expired" "2 0" \
  "$(events_of 'inv:{C}:events' expired) $(events_of 'inv:{C}:events' released)"

# ---------------------------------------------------------------- extend
t0=$(now_ms)
ev reserve $K , r5 2 60000 A 0 >/dev/null
out=$(ev extend $K , r5 120000 A 0)
expect_re "extend live r5" "^1 [0-9]{13}$" "$out"
exp5=$(cut -d' ' -f2 <<<"$out")
(( exp5 >= t0 + 120000 && exp5 <= t0 + 121000 )) || fail "extend r5: expiry $exp5 not ~ now+120s"
expect "extend moved the hold's expiry" "$exp5" "$(hold A r5 | cut -d' ' -f2)"
expect "extend never shortens a hold" "1 $exp5 $exp5" "$(ev extend $K , r5 1000 A 0) $(hold A r5 | cut -d' ' -f2)"
ev reserve $K , r6 1 50 A 0 >/dev/null
sleep 0.2
before=$(events_of 'inv:{A}:events' expired)
expect "extend lapsed r6" "0" "$(ev extend $K , r6 60000 A 0)"
expect "extend purged r6" "$((before + 1)) 0 2" \
  "$(events_of 'inv:{A}:events' expired) $(has A r6) $(rc hget 'inv:{A}' reserved)"
expect "extend unknown rid" "0" "$(ev extend $K , nope 60000 A 0)"

# ---------------------------------------------------------------- set_stock refusals
expect "set_stock below reserved refused" "0 2" "$(ev set_stock $K , 1 1 A 0)"
expect "refused set_stock changed nothing" "7 2 3" "$(rc hmget 'inv:{A}' on_hand reserved sold)"
expect "set_stock A=5" "1 5 2 3" "$(ev set_stock $K , 5 1 A 0)"
expect_re "stock_set qty is the signed change" "^type stock_set sku A bucket 0 ref  qty -2 on_hand 5 reserved 2 sold 3 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{A}:events')"
expect "set_stock on bucket 1 ignores buckets" "1 4 0 0" "$(ev set_stock $(kk A~1) , 4 junk A 1)"
expect "bucket 1 has no buckets field" "0" "$(rc hexists 'inv:{A~1}' buckets)"
expect "set_stock buckets 0 means 1" "1 5 2 3 1" "$(ev set_stock $K , 5 0 A 0) $(rc hget 'inv:{A}' buckets)"

# ---------------------------------------------------------------- adjust_stock
KA="$K inv:{A}:adj"
expect "adjust a1 +5" "1 10 2 3" "$(ev adjust_stock $KA , a1 5 A 0 0)"
expect_re "adjusted event" "^type adjusted sku A bucket 0 ref a1 qty 5 on_hand 10 reserved 2 sold 3 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{A}:events')"
len=$(rc xlen 'inv:{A}:events')
expect "adjust a1 again is idempotent" "2 10 2 3" "$(ev adjust_stock $KA , a1 5 A 0 0)"
expect "adjust a2 -9 below reserved refused" "0 10 2" "$(ev adjust_stock $KA , a2 -9 A 0 0)"
expect "refused adjust left no trace" "0 10 $len" \
  "$(rc zscore 'inv:{A}:adj' a2 | wc -w) $(rc hget 'inv:{A}' on_hand) $(rc xlen 'inv:{A}:events')"
expect "adjust a2 retried later with room" "1 2 2 3" "$(ev adjust_stock $KA , a3 -8 A 0 0)"
expect "adjust delta 0 is an error" "ERR adjust_stock: delta must be a non-zero integer" "$(ev adjust_stock $KA , a4 0 A 0 0)"
old=$(( $(now_ms) - 8 * 24 * 3600 * 1000 ))
recent=$(( $(now_ms) - 6 * 24 * 3600 * 1000 ))
rc zadd 'inv:{A}:adj' "$old" ancient "$recent" recent >/dev/null
ev adjust_stock $KA , a5 1 A 0 0 >/dev/null
expect "adj ids are kept for good by default (retention 0)" "1 1" \
  "$(rc zscore 'inv:{A}:adj' ancient | wc -w) $(rc zscore 'inv:{A}:adj' recent | wc -w)"
expect "a repeat of an 8-day-old id changes nothing" "2 3 2 3" "$(ev adjust_stock $KA , ancient 5 A 0 0)"
ev adjust_stock $KA , a6 1 A 0 $(( 7 * 24 * 3600 * 1000 )) >/dev/null
expect "a configured retention trims older ids only" "0 1" \
  "$(rc zscore 'inv:{A}:adj' ancient | wc -w) $(rc zscore 'inv:{A}:adj' recent | wc -w)"
expect "adjust with a bad retention is an error" "ERR adjust_stock: retention_ms must be an integer >= 0" \
  "$(ev adjust_stock $KA , a7 1 A 0 -1)"

# ---------------------------------------------------------------- outbox ids and back-pressure
seq=$(rc hget 'inv:{A}' seq)
ids=($(redis-cli -p "$PORT" xrange 'inv:{A}:events' - + | grep -E '^[0-9]+-[0-9]+$'))
expect "outbox_ack deletes the prefix up to the id it names, no more" "2 $(( ${#ids[@]} - 2 )) ${ids[2]}" \
  "$(ev outbox_ack inv:{A}:events , "${ids[1]}") $(redis-cli -p "$PORT" xrange 'inv:{A}:events' - + count 1 | head -1)"
expect "outbox_ack with a bad id is an error that deletes nothing" \
  "ERR outbox_ack: the last id must be a stream id <ms>-<seq> $(( ${#ids[@]} - 2 ))" \
  "$(ev outbox_ack inv:{A}:events , nope) $(rc xlen 'inv:{A}:events')"
expect "outbox_ack deletes the emptied stream" "0" "$(ev outbox_ack inv:{A}:events , "${ids[-1]}" | cut -d' ' -f2)"
ev adjust_stock $KA , a8 1 A 0 0 >/dev/null
expect_re "the sequence outlives the stream" "seq $((seq + 1))$" "$(last_event 'inv:{A}:events')"
KF=$(kk F)
ev set_stock $KF , 10 1 F 0 >/dev/null
rc eval "for i = 1, 100000 do redis.call('XADD', KEYS[1], '*', 'type', 'filler') end return 1" 1 'inv:{F}:events' >/dev/null
expect_re "a full outbox refuses a new hold" "^OUTBOX_FULL reserve" "$(ev reserve $KF , f1 1 60000 F 0)"
expect_re "a full outbox refuses set_stock and adjust_stock" "^OUTBOX_FULL set_stock.* OUTBOX_FULL adjust_stock" \
  "$(ev set_stock $KF , 11 1 F 0) $(ev adjust_stock $KF inv:{F}:adj , f2 1 F 0 0)"
expect "a full outbox moves nothing out" "0" "$(ev rebalance_take $KF inv:{F}:xfer , tf 1 1 F 0)"
expect "nothing was trimmed" "100001 10" "$(rc xlen 'inv:{F}:events') $(rc hget 'inv:{F}' on_hand)"
rc del 'inv:{F}:events' >/dev/null

# ---------------------------------------------------------------- sweep
KS=$(kk S)
ev set_stock $KS , 10 1 S 0 >/dev/null
ev reserve $KS , s1 1 $PAIR_TTL S 0 >/dev/null
out=$(ev reserve $KS , s2 2 $PAIR_TTL S 0); exp2=$(cut -d' ' -f2 <<<"$out")
out=$(ev reserve $KS , s3 3 60000 S 0); exp3=$(cut -d' ' -f2 <<<"$out")
past "$exp2"
t0=$(now_ms)
out=$(ev sweep $KS , 1 S 0)
expect_re "sweep max 1 purges one" "^1 [0-9]{13}$" "$out"
nx=$(cut -d' ' -f2 <<<"$out")
(( nx <= t0 )) || fail "sweep max 1: next expiry $nx should be <= now ($t0): more are due"
pass "sweep cut short reports a due next expiry"
expect "sweep purges the rest, next = s3" "1 $exp3" "$(ev sweep $KS , 100 S 0)"
expect "sweep with nothing due" "0 $exp3" "$(ev sweep $KS , 100 S 0)"
expect "sweep left live reserved" "3 2" "$(rc hget 'inv:{S}' reserved) $(events_of 'inv:{S}:events' expired)"
ev release $KS , s3 S 0 >/dev/null
expect "sweep of an empty bucket" "0 -1" "$(ev sweep $KS , 100 S 0)"

# ---------------------------------------------------------------- rebalance
KH="$(kk H) inv:{H}:xfer"
KH1="inv:{H~1} inv:{H~1}:events inv:{H~1}:xin"
ev set_stock $(kk H) , 10 2 H 0 >/dev/null
ev reserve $(kk H) , h1 4 60000 H 0 >/dev/null
expect "take t1 moves min(units, available)" "6" "$(ev rebalance_take $KH , t1 8 1 H 0)"
expect_re "take recorded the transfer with its time" "^1:6:[0-9]{13} 4$" "$(rc hget 'inv:{H}:xfer' t1) $(rc hget 'inv:{H}' on_hand)"
expect_re "transfer_out event" "^type transfer_out sku H bucket 0 ref t1 qty -6 on_hand 4 reserved 4 sold 0 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{H}:events')"
expect "take t1 again answers the recorded units" "6" "$(ev rebalance_take $KH , t1 8 1 H 0)"
expect "take t1 again moved nothing" "4 1" "$(rc hget 'inv:{H}' on_hand) $(events_of 'inv:{H}:events' transfer_out)"
taken=$(rc hget 'inv:{H}:xfer' t1 | cut -d: -f3)
expect "give t1" "1" "$(ev rebalance_give $KH1 , t1 6 H 1 $taken)"
expect_re "transfer_in event" "^type transfer_in sku H bucket 1 ref t1 qty 6 on_hand 6 reserved 0 sold 0 at [0-9]{13} seq [0-9]+$" \
  "$(last_event 'inv:{H~1}:events')"
expect "give t1 again" "0" "$(ev rebalance_give $KH1 , t1 6 H 1 $taken)"
expect "give t1 again added nothing" "6 1" "$(rc hget 'inv:{H~1}' on_hand) $(rc xlen 'inv:{H~1}:events')"
rc hdel 'inv:{H}:xfer' t1 >/dev/null
expect "take with nothing available" "0" "$(ev rebalance_take $KH , t2 5 1 H 0)"
expect "empty take records nothing" "0 1" "$(rc hexists 'inv:{H}:xfer' t2) $(events_of 'inv:{H}:events' transfer_out)"
rc zadd 'inv:{H~1}:xin' $(( $(now_ms) - 2 * 24 * 3600 * 1000 )) recent $(( $(now_ms) - 8 * 24 * 3600 * 1000 )) stale >/dev/null
ev rebalance_give $KH1 , t3 1 H 1 0 >/dev/null
expect "xin keeps ids for 7 days" "0 1 1" \
  "$(rc zscore 'inv:{H~1}:xin' stale | wc -w) $(rc zscore 'inv:{H~1}:xin' recent | wc -w) $(rc zscore 'inv:{H~1}:xin' t1 | wc -w)"
expect "a give older than the xin window is refused" "-1 7" \
  "$(ev rebalance_give $KH1 , t4 5 H 1 $(( $(now_ms) - 8 * 24 * 3600 * 1000 ))) $(rc hget 'inv:{H~1}' on_hand)"

# ---------------------------------------------------------------- SetStock's fence
expect "raise a fence" "1" "$(ev stock_fence inv:{H} , raise tokA 60000)"
expect "a fenced bucket gives nothing away" "0 0" "$(ev rebalance_take $KH , t5 1 1 H 0) $(rc hexists 'inv:{H}:xfer' t5)"
expect "set_stock needs the caller's own fence" "-1" "$(ev set_stock $(kk H) , 4 2 H 0 tokB)"
expect "set_stock under the caller's fence" "1 4 4 0" "$(ev set_stock $(kk H) , 4 2 H 0 tokA)"
expect "another caller cannot lower it" "0 tokA" "$(ev stock_fence inv:{H} , lower tokB 0) $(rc hget 'inv:{H}' fence)"
expect "the owner lowers it" "1 0" "$(ev stock_fence inv:{H} , lower tokA 0) $(rc hexists 'inv:{H}' fence)"
ev stock_fence inv:{H} , raise tokC 50 >/dev/null
sleep 0.2
expect "a lapsed fence refuses set_stock" "-1" "$(ev set_stock $(kk H) , 4 2 H 0 tokC)"
expect "set_stock without a fence (a single-bucket tool)" "1 10 4 0" "$(ev set_stock $(kk H) , 10 2 H 0 '')"
expect "a lapsed fence lets transfers go and lowers as lost" "1 0" \
  "$(ev rebalance_take $KH , t6 1 1 H 0) $(ev stock_fence inv:{H} , lower tokC 0)"
expect "bad fence action is an error" "ERR stock_fence: action must be raise or lower" "$(ev stock_fence inv:{H} , up tokA 1)"

# ---------------------------------------------------------------- reservation records
R=o1
expect "claim new" "claimed" "$(ev reservation_claim $(rk $R) , fpA 'A:2:0' 60000 600000 '' $R)"
expect "claim created pending" "pending fpA A:2:0" "$(recf $R state fp lines)"
at=($(recat $R))
expect "a small record is a field of a short generation hash" "1" "$([[ ${at[0]} == res:{s}:s* ]] && echo 1)"
(( at[1] > 590000 && at[1] <= 600000 + 300000 )) || fail "claim: generation pttl ${at[1]} not retention .. + 5 min"
pass "claim set retention (rounded up to its generation's end)"
expect "claim again, lease live" "busy" "$(ev reservation_claim $(rk $R) , fpA 'A:2:0' 60000 600000 '' $R)"
expect "claim with another fingerprint" "conflict" "$(ev reservation_claim $(rk $R) , fpB 'A:2:0' 60000 600000 '' $R)"

R2=o2
ev reservation_claim $(rk $R2) , fpA 'A:1:0' 50 600000 '' $R2 >/dev/null
sleep 0.2
expect "claim over a lapsed lease" "claimed A:1:0" "$(ev reservation_claim $(rk $R2) , fpA 'X:9:9' 60000 600000 '' $R2)"
expect "the takeover holds the lease now" "busy" "$(ev reservation_claim $(rk $R2) , fpA 'A:1:0' 60000 600000 '' $R2)"

expect "transition pending->pending records lines" "1 pending 0 A:2:1" \
  "$(ev reservation_transition $(rk $R) , pending pending -1 '' 0 600000 'A:2:1' '' $R)"
exp=$(( $(now_ms) + 60000 ))
expect "transition pending->reserved" "1 reserved $exp A:2:1" \
  "$(ev reservation_transition $(rk $R) , pending reserved $exp '' 0 86460000 '' '' $R)"
at=($(recat $R))
expect "a kept record moves to a 12 h generation hash" "1" "$([[ ${at[0]} =~ ^res:\{s\}:[0-9]+$ ]] && echo 1)"
(( at[1] >= 86400000 && at[1] <= 86460000 + 43200000 )) || fail "reserved: generation pttl ${at[1]}"
pass "and is kept its retention, at most one generation longer"
expect "the short generations let it go (only $R2 is left there)" "1" \
  "$(rc eval "local n = 0 for _, k in ipairs(redis.call('KEYS', 'res:{s}:s*')) do n = n + redis.call('HLEN', k) end return n" 0)"
expect "claim on reserved answers the first answer" "reserved $exp  A:2:1" \
  "$(ev reservation_claim $(rk $R) , fpA 'A:2:0' 60000 600000 '' $R)"
expect "transition from the wrong state refused" "0 reserved $exp A:2:1" \
  "$(ev reservation_transition $(rk $R) , pending rejected -1 'A:2:0' 0 600000 '' '' $R)"
expect "transition on a missing record refused" "0  0" \
  "$(ev reservation_transition $(rk none) , reserved released -1 '' 0 600000 '' '' none)"
expect "missing record not created" "" "$(recat none)"
expect "transition reserved->preparing require_live (live)" "1 preparing $exp A:2:1" \
  "$(ev reservation_transition $(rk $R) , reserved preparing -1 '' 1 600000 '' '' $R)"
expect "undocumented edge is an error" \
  "ERR reservation_transition: preparing -> reserved is not allowed" \
  "$(ev reservation_transition $(rk $R) , preparing reserved -1 '' 0 600000 '' '' $R)"
expect "a record without a rid is an error" "ERR reservation_transition: rid is empty" \
  "$(ev reservation_transition $(rk $R) , preparing committing -1 '' 0 600000 '' '' '')"

exp=$(( $(now_ms) + 50 ))
ev reservation_transition $(rk $R2) , pending reserved $exp '' 0 600000 'A:1:0' '' $R2 >/dev/null
sleep 0.2
expect "require_live on a lapsed record refused" "0 reserved $exp A:1:0" \
  "$(ev reservation_transition $(rk $R2) , reserved preparing -1 '' 1 600000 '' '' $R2)"
expect "refused transition wrote nothing" "reserved" "$(recf $R2 state)"
expect "reserved->released without require_live" "1 released $exp A:1:0" \
  "$(ev reservation_transition $(rk $R2) , reserved released -1 '' 0 86400000 '' '' $R2)"
at=($(recat $R2))
(( at[1] >= 86400000 )) || fail "transition: pttl ${at[1]} not refreshed"
pass "transition refreshed retention"

R3=o3
ev reservation_claim $(rk $R3) , fpC 'A:5:0' 60000 600000 '' $R3 >/dev/null
expect "pending->rejected with shortages" "1 rejected 0 A:5:0" \
  "$(ev reservation_transition $(rk $R3) , pending rejected -1 'A:5:2' 0 600000 '' '' $R3)"
expect "claim on rejected (a refusal keeps no lines)" "rejected 0 A:5:2" \
  "$(ev reservation_claim $(rk $R3) , fpC 'A:5:0' 60000 600000 '' $R3)"

# ---------------------------------------------------------------- claims: heartbeat and fence
R4=o4
expect "claim with an owner" "claimed" "$(ev reservation_claim $(rk $R4) , fpD 'A:1:0' 50 600000 tokA $R4)"
expect "the owner renews" "1" "$(ev reservation_renew $(rk $R4) , tokA 60000 $R4)"
expect "a renewed lease keeps others out" "busy" "$(ev reservation_claim $(rk $R4) , fpD 'A:1:0' 50 600000 tokB $R4)"
expect "another token cannot renew" "0" "$(ev reservation_renew $(rk $R4) , tokB 60000 $R4)"
recset $R4 lease 0
expect "a lapsed lease is taken over" "claimed A:1:0" "$(ev reservation_claim $(rk $R4) , fpD 'A:1:0' 50 600000 tokB $R4)"
expect "the old owner is fenced out of renewing" "0" "$(ev reservation_renew $(rk $R4) , tokA 60000 $R4)"
expect "the old owner cannot finish" "0 pending 0 A:1:0" \
  "$(ev reservation_transition $(rk $R4) , pending rejected -1 'A:1:1' 0 600000 '' tokA $R4)"
expect "the new owner finishes" "1 rejected 0 A:1:0" \
  "$(ev reservation_transition $(rk $R4) , pending rejected -1 'A:1:1' 0 600000 '' tokB $R4)"
expect "no lease or owner left" "" "$(recf $R4 lease owner | tr -d " ")"
expect "renew of a finished record" "0" "$(ev reservation_renew $(rk $R4) , tokB 60000 $R4)"
# Records of the layouts before (res:{rid}: a hash, then a packed string) are read, and moved
# into the shard's generation hashes by their next write.
RL=legacy
rc hset "res:{$RL}" state reserved fp fpL lines 'A:1:0' expires_at 123 >/dev/null
rc pexpire "res:{$RL}" 600000 >/dev/null
expect "a hash record answers as before" "reserved 123  A:1:0" "$(ev reservation_claim $(rk $RL) , fpL 'A:1:0' 60000 600000 tokL $RL)"
expect "a hash record conflicts as before" "conflict" "$(ev reservation_claim $(rk $RL) , other 'A:1:0' 60000 600000 tokL $RL)"
expect "a hash record moves on" "1 released 123 A:1:0" \
  "$(ev reservation_transition $(rk $RL) , reserved released -1 '' 0 600000 '' '' $RL)"
expect "and lives in the shard since" "0 released fpL 123" "$(rc exists "res:{$RL}") $(recf $RL state fp expires_at)"
rc set "res:{s2}" "$(printf 'r\nfpS\n456\nA:2:0')" px 600000 >/dev/null
expect "a packed string record answers as before" "reserved 456  A:2:0" \
  "$(ev reservation_claim $(rk s2) , fpS 'A:2:0' 60000 600000 tok s2)"
expect "and moves on its next write" "1 released 456 A:2:0 0" \
  "$(ev reservation_transition $(rk s2) , reserved released -1 '' 0 600000 '' '' s2) $(rc exists "res:{s2}")"
expect "a field holding a newline is refused" "1" \
  "$(ev reservation_claim $(rk nl) , "$(printf 'f\np')" 'A:1:0' 60000 600000 tok nl | grep -c 'newline')"
R5=o5
ev reservation_claim $(rk $R5) , fpE 'A:1:0' 60000 600000 tokE $R5 >/dev/null
ev reservation_transition $(rk $R5) , pending reserved 99 '' 0 600000 '' '' $R5 >/dev/null
ev reservation_transition $(rk $R5) , reserved preparing -1 '' 0 600000 '' '' $R5 >/dev/null
expect "release unwinds an interrupted preparing" "1 released 99 A:1:0" \
  "$(ev reservation_transition $(rk $R5) , preparing released -1 '' 0 600000 '' '' $R5)"
# A record too big for a listpack entry (a pending claim with a long owner token, a long id) is a
# string of its own in the shard's slot, and moves into a generation hash once it fits.
big=$(printf 'x%.0s' $(seq 60))
expect "a big record" "claimed" "$(ev reservation_claim $(rk o6) , fpF 'A:1:0' 60000 600000 "$big" o6)"
expect "is a key of its own" "res:{s}:k:o6" "$(recat o6 | cut -d' ' -f1)"
expect "and joins a generation hash once it fits" "1 res:{s}:s" \
  "$(ev reservation_transition $(rk o6) , pending rejected -1 'A:1:0' 0 600000 '' "$big" o6 | cut -d' ' -f1) $(recat o6 | cut -c1-9)"
expect "the big key is gone" "0" "$(rc exists 'res:{s}:k:o6')"
uuid=0f8fad5b-d9cb-469f-a165-70867728950e
ev reservation_claim $(rk $uuid) , fpU 'A:1:0' 60000 600000 '' $uuid >/dev/null
expect "a UUID id is 17 bytes in the hash, and found again" "1 pending" \
  "$(rc eval "local n = 0 for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do if #f == 17 then n = n + 1 end end return n" \
    1 "$(recat $uuid | cut -d' ' -f1)") $(recf $uuid state)"
expect "forget deletes a record wherever it is" "1 0 " \
  "$(ev reservation_forget $(rk $uuid) , $uuid) $(ev reservation_forget $(rk $uuid) , $uuid) $(recat $uuid)"

# ---------------------------------------------------------------- durable truth
rc flushall >/dev/null
expect "no generation marker yet" "0" "$(ev generation inv:generation , beat)"
expect "create a generation" "1 g1 1" "$(ev generation inv:generation , create g1)"
expect "a beat counts up" "1 g1 2" "$(ev generation inv:generation , beat)"
expect "bad action" "ERR generation: action must be beat or create" "$(ev generation inv:generation , nap)"
rc flushall >/dev/null
expect "FLUSHALL loses the marker" "0" "$(ev generation inv:generation , beat)"
T=$(kk T)
ev set_stock $T , 10 1 T 0 >/dev/null
ev reserve $T , t1 2 60000 T 0 >/dev/null
ev reserve $T , t2 3 60000 T 0 >/dev/null
ev commit $T , t1 T 0 >/dev/null
expect "snapshot: counters, seq, live holds" "1 8 2 4 1 1 1 t2 3" \
  "$(ev truth_snapshot inv:{T} inv:{T}:holds inv:{T}:held inv:{T}:xfer ,)"
expect "snapshot of a missing bucket" "0 0 0 0 1 1 0" \
  "$(ev truth_snapshot inv:{U} inv:{U}:holds inv:{U}:held inv:{U}:xfer ,)"
expect "rebuild keeps holds that fit, raises seq" "9 3 4" "$(ev truth_rebuild $T inv:{T}:xfer , 9 4 20 T 0)"
expect "seq raised to the store's version, then one stock_set" "21" "$(rc hget inv:{T} seq)"
ev reserve $T , t3 4 60000 T 0 >/dev/null
expect "rebuild drops holds the store sold, releases what no longer fits" "2 0 7 t2" \
  "$(ev truth_rebuild $T inv:{T}:xfer , 2 7 0 T 0 t3)"
expect "bucket other than 0 keeps exactly its holds" "0 0 0" "$(ev truth_rebuild $T inv:{T}:xfer , -1 0 0 T 0 t2)"
expect "bad on_hand" "ERR truth_rebuild: on_hand must be an integer >= -1" "$(ev truth_rebuild $T inv:{T}:xfer , -2 0 0 T 0)"
# ---------------------------------------------------------------- cart_evict_stale
CK='cart:{c:ann}'
rc hset $CK _v 3 _u 1 'l:MUG' '2|1299|EUR|1' >/dev/null
expect "evict_stale keeps a live copy as new as the saved one" "current 3 1" "$(ev cart_evict_stale $CK , 3) $(rc exists $CK)"
expect "evict_stale keeps a newer live copy" "current 3 1" "$(ev cart_evict_stale $CK , 2) $(rc exists $CK)"
expect "evict_stale drops an older live copy" "evicted 3 0" "$(ev cart_evict_stale $CK , 4) $(rc exists $CK)"
expect "evict_stale of an absent cart writes nothing" "current 0 0" "$(ev cart_evict_stale $CK , 4) $(rc exists $CK)"
expect "evict_stale refuses version 0" "ERR cart_evict_stale: version must be an integer >= 1" "$(ev cart_evict_stale $CK , 0)"

# ---------------------------------------------------------------- cart_view (read-only)
VK='cart:{c:vic}'
rc hset $VK _v 2 _u 1 'l:V1' '1|100|EUR|1' 'l:V2' '1|100|EUR|2' >/dev/null
rc hset 'cat:{V1}' v 1 p prod-v1 >/dev/null
ev set_stock $(kk V1) , 10 1 V1 0 >/dev/null
ev reserve $(kk V1) , v1r 3 60000 V1 0 >/dev/null
expect "view: a cached product and on_hand - reserved; an uncached, unstocked SKU left to the services" \
  "_v 2 _u 1 l:V1 1|100|EUR|1 l:V2 1|100|EUR|2 V1 prod-v1 7 V2  -1" "$(ev cart_view $VK , '')"
ev set_stock $(kk V3) , 10 4 V3 0 >/dev/null
expect "view: the extra SKU, split into buckets, is left to inventory" " V3  -1" \
  "$(ev cart_view 'cart:{c:none}' , V3)"
ev set_stock $(kk V4) , 5 1 V4 0 >/dev/null
ev reserve $(kk V4) , v4r 2 100 V4 0 >/dev/null
expect "view: a live hold counts" " V4  3" "$(ev cart_view 'cart:{c:none}' , V4)"
past $(( $(now_ms) + 100 ))
expect "view: a lapsed, unpurged hold is left to inventory" " V4  -1" "$(ev cart_view 'cart:{c:none}' , V4)"
ev set_stock $(kk V5) , 6 1 V5 0 >/dev/null
expect "view: a stocked SKU with nothing reserved answers on_hand" " V5  6" "$(ev cart_view 'cart:{c:none}' , V5)"
ev reserve $(kk V5) , v5r 4 100 V5 0 >/dev/null
ev release $(kk V5) , v5r V5 0 >/dev/null
expect "view: held then released, nothing reserved: on_hand again" " V5  6" "$(ev cart_view 'cart:{c:none}' , V5)"
expect "view: an absent cart and no extra SKU" "" "$(ev cart_view 'cart:{c:none}' , '')"
rc set cat:epoch ep-1 >/dev/null
expect "view: the caller names the catalog's epoch: no product read (1), the epoch answered" \
  "_v 2 _u 1 l:V1 1|100|EUR|1 l:V2 1|100|EUR|2 V1 1 7 V2 1 -1 ep-1" "$(ev cart_view $VK , '' ep-1)"
expect "view: an older epoch: the products are read, the epoch now answered" \
  "_v 2 _u 1 l:V1 1|100|EUR|1 l:V2 1|100|EUR|2 V1 prod-v1 7 V2  -1 ep-1" "$(ev cart_view $VK , '' ep-0)"
expect "view: no epoch named: the products are read" \
  "_v 2 _u 1 l:V1 1|100|EUR|1 l:V2 1|100|EUR|2 V1 prod-v1 7 V2  -1 ep-1" "$(ev cart_view $VK , '')"
rc del cat:epoch >/dev/null
expect "view: the catalog has no epoch: whatever is named, the products are read" \
  "_v 2 _u 1 l:V1 1|100|EUR|1 l:V2 1|100|EUR|2 V1 prod-v1 7 V2  -1" "$(ev cart_view $VK , '' ep-1)"
expect "view writes nothing" "0" "$(rc exists 'cart:{c:none}')"

# ---------------------------------------------------------------- cart_add_viewed
AV='cart:{c:ava}'
expect "add_viewed: no sellable entry (V1 has only p) asks, writes nothing" "ask 0 -1 0" \
  "$(ev cart_add_viewed $AV , 1 0 V1 1 10 99 60000 | tr -s ' ') $(rc exists $AV)"
rc hset 'cat:{V3}' v 1 p prod-v3 s '1|90|EUR' >/dev/null
expect "add_viewed: a SKU inventory must answer (split into buckets) asks" "ask 0 -1 0" \
  "$(ev cart_add_viewed $AV , 1 0 V3 1 10 99 60000 | tr -s ' ') $(rc exists $AV)"
rc hset 'cat:{V6}' v 1 p prod-v6 s 0 >/dev/null
expect "add_viewed: an inactive product is refused, nothing written" "not_sellable 0 -1 0" \
  "$(ev cart_add_viewed $AV , 1 0 V6 1 10 99 60000 | tr -s ' ') $(rc exists $AV)"
rc hset 'cat:{V5}' v 1 p prod-v5 s '1|250|EUR' >/dev/null
expect "add_viewed: an absent cart the store was not asked about is cold" "cold 0 0" \
  "$(ev cart_add_viewed $AV , 0 0 V5 1 10 99 60000 | tr -s ' ') $(rc exists $AV)"
expect_re "add_viewed: adds at the cached price, answers the view and the stock it checked" \
  "^ok 1 l:V5 2\|250\|EUR\|[0-9]+ _v 1 _u [0-9]+ V5 prod-v5 6 6$" \
  "$(ev cart_add_viewed $AV , 1 0 V5 2 10 99 60000 | tr -s ' ')"
expect_re "add_viewed: past the units available: out_of_stock with the line as it is" \
  "^out_of_stock 2 l:V5 2\|250\|EUR\|[0-9]+ _v 1 _u [0-9]+ V5 prod-v5 6 6$" \
  "$(ev cart_add_viewed $AV , 1 0 V5 5 10 99 60000 | tr -s ' ')"
rc set cat:epoch ep-2 >/dev/null
rc hset $AV 'l:V1' '1|100|EUR|1' >/dev/null
expect_re "add_viewed: the caller names the catalog's epoch: the view reads only the added SKU's product" \
  "^ok 2 l:V5 3\|250\|EUR\|[0-9]+ _v 2 _u [0-9]+ l:V1 1\|100\|EUR\|1 V5 prod-v5 6 V1 1 7 6 ep-2$" \
  "$(ev cart_add_viewed $AV , 1 0 V5 1 10 99 60000 ep-2 | tr -s ' ')"
rc del cat:epoch >/dev/null
expect "add_viewed: a corrupt cached entry is an error" "ERR cart_add_viewed: cached entry s of V6 is corrupt" \
  "$(rc hset 'cat:{V6}' s '1|x|EUR' >/dev/null; ev cart_add_viewed $AV , 1 0 V6 1 10 99 60000)"

# ---------------------------------------------------------------- admission_take (GCRA)
AT='admission:{sku:F1}:checkout:tat'; AL='admission:{sku:F1}:limits'
expect "unlimited by default" "1 0 0 0" "$(ev admission_take $AT $AL , checkout 0 1)"
expect "no TAT kept while unlimited" "0" "$(rc exists $AT)"
expect "burst 2: first admitted" "1 0 1000 0" "$(ev admission_take $AT $AL , checkout 1 2)"
expect "burst 2: second admitted" "1 0 1000 0" "$(ev admission_take $AT $AL , checkout 1 2)"
expect_re "burst 2: third refused with a retry delay" "^0 ([0-9]+) 1000 0$" "$(ev admission_take $AT $AL , checkout 1 2)"
got="$(ev admission_take $AT $AL , checkout 1 2)"; delay="${got#0 }"; delay="${delay% 1000 0}"
(( delay >= 1 && delay <= 1000 )) || fail "retry delay within one interval: got [$got]"
pass "retry delay within one interval"
expect_re "the TAT expires once in the past" "^[0-9]+$" "$(rc pttl $AT)"
rc hset $AL checkout:per_second 0 >/dev/null
expect "a runtime limit of 0 lifts the limit" "1 0 0 0" "$(ev admission_take $AT $AL , checkout 1 2)"
rc hset $AL checkout:per_second 1000 checkout:burst 5 >/dev/null; rc del $AT >/dev/null
expect "the runtime limit wins over the default" "1 0 1000000 0" "$(ev admission_take $AT $AL , checkout 1 1)"
expect "another operation keeps its default" "1 0 0 0" "$(ev admission_take 'admission:{sku:F1}:reserve:tat' $AL , reserve 0 1)"
rc hset $AL drop 1 >/dev/null
expect "a drop flag is reported" "1 0 1000000 1" "$(ev admission_take $AT $AL , checkout 1 1)"
# Several calls decided at once (coalesced Reserves): the first ones, up to the burst, pass.
AT='admission:{sku:F2}:reserve:tat'; AL='admission:{sku:F2}:limits'
expect_re "5 calls at once on an idle subject, burst 3: 3 admitted, a retry delay" "^3 ([0-9]+) 1000 0$" \
  "$(ev admission_take $AT $AL , reserve 1 3 5)"
expect_re "then 2 more at once: none admitted" "^0 ([0-9]+) 1000 0$" "$(ev admission_take $AT $AL , reserve 1 3 2)"
expect "5 calls at once, unlimited: all admitted, no TAT" "5 0 0 0 0" \
  "$(ev admission_take 'admission:{sku:F3}:reserve:tat' 'admission:{sku:F3}:limits' , reserve 0 1 5) $(rc exists 'admission:{sku:F3}:reserve:tat')"
expect "calls of 0 is an error" "ERR admission_take: calls must be an integer 1..1000" \
  "$(ev admission_take $AT $AL , reserve 1 3 0)"

# ---------------------------------------------------------------- admission_take_all
# One call naming two subjects: admitted only if both admit it, and only then charged.
T1='admission:{sku:G1}:checkout:tat'; L1='admission:{sku:G1}:limits'
T2='admission:{sku:G2}:checkout:tat'; L2='admission:{sku:G2}:limits'
expect "two unlimited subjects: admitted, no TAT kept" "1 0 0 0 0 0" \
  "$(ev admission_take_all $T1 $L1 $T2 $L2 , checkout 0 1 0 1) $(rc exists $T1) $(rc exists $T2)"
expect "G1 burst 2, G2 burst 1: the first call is admitted" "1 0 0 0" \
  "$(ev admission_take_all $T1 $L1 $T2 $L2 , checkout 1 2 1 1)"
expect_re "the second is refused by G2, with a retry delay" "^0 [0-9]+ 2 0$" \
  "$(ev admission_take_all $T1 $L1 $T2 $L2 , checkout 1 2 1 1)"
expect "the refused call cost G1 nothing: its second unit is still there" "1 0 1000 0" \
  "$(ev admission_take $T1 $L1 , checkout 1 2)"
expect_re "now G1 refuses first" "^0 [0-9]+ 1 0$" "$(ev admission_take_all $T1 $L1 $T2 $L2 , checkout 1 2 1 1)"
rc hset $L2 drop 1 checkout:per_second 0 >/dev/null
expect "a runtime limit of 0 lifts G2's; its drop flag is reported" "1 0 0 1" \
  "$(ev admission_take_all 'admission:{sku:G3}:checkout:tat' 'admission:{sku:G3}:limits' $T2 $L2 , checkout 0 1 1 1)"
expect "KEYS and arguments must agree (admission_take_all)" \
  "ERR admission_take_all: one subject (2 KEYS, 2 arguments) at least, and as many KEYS as arguments" \
  "$(ev admission_take_all $T1 $L1 $T2 , checkout 1 2 1 1)"
expect "an unknown operation is an error" "ERR admission_take_all: the operation must be checkout or reserve" \
  "$(ev admission_take_all $T1 $L1 , cart 1 2)"

# ---------------------------------------------------------------- reservation_extend
# Two lines on E1 and E2, one record: every hold extended and the record moved in one call.
ev set_stock $(kk E1) , 5 1 E1 0 >/dev/null; ev set_stock $(kk E2) , 5 1 E2 0 >/dev/null
RX=x1; RXL='E1:2:0;E2:1:0'
xk() { echo "$(rk $1) $(kk E1) inv:expiries:1 $(kk E2) inv:expiries:2"; }
ev reserve $(kk E1) , $RX 2 60000 E1 0 >/dev/null; ev reserve $(kk E2) , $RX 1 30000 E2 0 >/dev/null
ev reservation_claim $(rk $RX) , fpX "$RXL" 60000 600000 '' $RX >/dev/null
exp=$(( $(now_ms) + 30000 ))
ev reservation_transition $(rk $RX) , pending reserved $exp '' 0 600000 "$RXL" '' $RX >/dev/null
t0=$(now_ms)
out=$(ev reservation_extend $(xk $RX) , $RX reserved reserved 120000 900000 1 "$RXL" E1 0 E1 E2 0 E2)
expect_re "extend every hold: moved, reserved, the earliest hold's expiry" "^1 reserved [0-9]{13} $RXL$" "$out"
xe=$(cut -d' ' -f3 <<<"$out")
(( xe >= t0 + 120000 && xe <= t0 + 121000 )) || fail "reservation_extend: expiry $xe not ~ now+120s"
expect "both holds and the record carry it" "$xe $xe $xe" \
  "$(hold E1 $RX | cut -d' ' -f2) $(hold E2 $RX | cut -d' ' -f2) $(recf $RX expires_at)"
expect "the sweeper's index has both buckets" "1 1" "$(rc zscore inv:expiries:1 E1 | grep -c .) $(rc zscore inv:expiries:2 E2 | grep -c .)"
at=($(recat $RX))
(( at[1] >= 899000 )) || fail "reservation_extend: record retention ${at[1]} not refreshed"
pass "the record's retention refreshed"
expect "other lines than the record's are refused, nothing written" "0 reserved $xe $RXL $xe" \
  "$(ev reservation_extend $(xk $RX) , $RX reserved reserved 300000 900000 1 'E1:2:0' E1 0 E1 E2 0 E2) $(hold E1 $RX | cut -d' ' -f2)"
expect "a wrong from state is refused" "0 reserved $xe $RXL" \
  "$(ev reservation_extend $(xk $RX) , $RX preparing committing 300000 900000 0 "$RXL" E1 0 E1 E2 0 E2)"
ev reservation_transition $(rk $RX) , reserved preparing -1 '' 1 600000 '' '' $RX >/dev/null
out=$(ev reservation_extend $(xk $RX) , $RX preparing committing 600000 1200000 0 "$RXL" E1 0 E1 E2 0 E2)
expect_re "commit's lease: preparing -> committing" "^1 committing [0-9]{13} $RXL$" "$out"
expect "the lease never shortens a hold, and the record is committing" "committing $(cut -d' ' -f3 <<<"$out")" \
  "$(recf $RX state) $(hold E1 $RX | cut -d' ' -f2)"
# A line whose hold lapsed: the other is extended, the record stays.
RY=x2; RYL='E1:1:0;E2:1:0'
ev reserve $(kk E1) , $RY 1 60000 E1 0 >/dev/null; ev reserve $(kk E2) , $RY 1 50 E2 0 >/dev/null
ev reservation_claim $(rk $RY) , fpY "$RYL" 60000 600000 '' $RY >/dev/null
exp=$(( $(now_ms) + 60000 ))
ev reservation_transition $(rk $RY) , pending reserved $exp '' 0 600000 "$RYL" '' $RY >/dev/null
sleep 0.2
e2before=$(events_of 'inv:{E2}:events' expired)
expect "a lapsed line: 2, the record unchanged" "2 reserved $exp $RYL" \
  "$(ev reservation_extend $(xk $RY) , $RY reserved reserved 120000 900000 1 "$RYL" E1 0 E1 E2 0 E2)"
expect "the lapsed hold was purged (expired event), never revived" "$((e2before + 1)) 0" \
  "$(events_of 'inv:{E2}:events' expired) $(has E2 $RY)"
expect "an edge outside the three is an error" \
  "ERR reservation_extend: (from, to) must be (reserved, reserved), (reserved, committing) or (preparing, committing)" \
  "$(ev reservation_extend $(xk $RY) , $RY preparing reserved 1 1 0 "$RYL" E1 0 E1 E2 0 E2)"
expect "KEYS and lines must agree" \
  "ERR reservation_extend: one line (5 KEYS, 3 arguments) at least, and as many KEYS as arguments" \
  "$(ev reservation_extend $(xk $RY) , $RY reserved reserved 1 1 0 "$RYL" E1 0 E1)"

# ---------------------------------------------------------------- reservation_commit
ck() { echo "$(rk $1) $(kk E1) $(kk E2)"; }
xexp=$(recf $RX expires_at)
expect "commit every line and the record: moved, 2 holds, each bucket's levels after" \
  "1 committed $xexp $RXL 2 3 1 2 1 1 4 0 1 1 1" \
  "$(ev reservation_commit $(ck $RX) , $RX 86400000 "$RXL" E1 0 E2 0)"
expect "sold (x2 still holds 1 of E1), the holds gone, the record committed" "3 1 2 4 1 0 0 committed" \
  "$(rc hmget 'inv:{E1}' on_hand reserved sold) $(rc hget 'inv:{E2}' on_hand) $(rc hget 'inv:{E2}' sold) $(has E1 $RX) $(has E2 $RX) $(recf $RX state)"
expect "one committed entry a line" "1 1" \
  "$(events_of 'inv:{E1}:events' committed) $(events_of 'inv:{E2}:events' committed)"
expect "a committed record is refused, nothing written" "0 committed $xexp $RXL 0 3" \
  "$(ev reservation_commit $(ck $RX) , $RX 86400000 "$RXL" E1 0 E2 0) $(rc hget 'inv:{E1}' on_hand)"
# A retry after the lease that finds a line's hold gone: the found one is committed, the record
# stays committing.
RZ=x3; RZL='E1:1:0;E2:1:0'
ev reserve $(kk E1) , $RZ 1 60000 E1 0 >/dev/null
ev reservation_claim $(rk $RZ) , fpZ "$RZL" 60000 600000 '' $RZ >/dev/null
zexp=$(( $(now_ms) + 50 ))
ev reservation_transition $(rk $RZ) , pending reserved $zexp '' 0 600000 "$RZL" '' $RZ >/dev/null
ev reservation_transition $(rk $RZ) , reserved preparing -1 '' 0 600000 '' '' $RZ >/dev/null
ev reservation_transition $(rk $RZ) , preparing committing -1 '' 0 600000 '' '' $RZ >/dev/null
sleep 0.2
expect "a hold missing after the lease: 2, one committed" "2 committing $zexp $RZL 1" \
  "$(ev reservation_commit $(ck $RZ) , $RZ 86400000 "$RZL" E1 0 E2 0)"
expect "the found one sold, the record still committing" "3 committing" \
  "$(rc hget 'inv:{E1}' sold) $(recf $RZ state)"
expect "KEYS and lines must agree (commit)" \
  "ERR reservation_commit: one line (4 KEYS, 2 arguments) at least, and as many KEYS as arguments" \
  "$(ev reservation_commit $(ck $RZ) , $RZ 86400000 "$RZL" E1 0)"

# ---------------------------------------------------------------- reservation_reserve
# A two-line Reserve in one call: both held or neither, the record written, both indexed.
ev set_stock $(kk W1) , 5 1 W1 0 >/dev/null; ev set_stock $(kk W2) , 2 1 W2 0 >/dev/null
WL='[["W1",2,0],["W2",1,0]]'
wk() { echo "$(rk $1) $(kk W1) inv:expiries:1 $(kk W2) inv:expiries:2"; }
t0=$(now_ms)
out=$(ev reservation_reserve $(wk w1) , w1 60000 fpW1 86400000 600000 "$WL" W1 2 W1 W2 1 W2)
expect_re "two lines held in one call" "^reserved [0-9]{13}$" "$out"
we=$(cut -d' ' -f2 <<<"$out")
(( we >= t0 + 60000 && we <= t0 + 61000 )) || fail "reservation_reserve: expiry $we not ~ now+60s"
expect "both buckets hold the units until the answer's expiry, the record says so" \
  "2 1 2 $we 1 $we reserved $we $WL" \
  "$(rc hget 'inv:{W1}' reserved) $(rc hget 'inv:{W2}' reserved) $(hold W1 w1) $(hold W2 w1) $(recf w1 state expires_at lines)"
expect_re "a reserved entry in each bucket's outbox" "^type reserved sku W1 bucket 0 ref w1 qty 2 .* type reserved sku W2 bucket 0 ref w1 qty 1 " \
  "$(last_event 'inv:{W1}:events') $(last_event 'inv:{W2}:events')"
expect "both in the sweeper's index" "$we $we" "$(rc zscore inv:expiries:1 W1) $(rc zscore inv:expiries:2 W2)"
expect "a repeat gets the first answer, holds nothing more" "reserved $we 2" \
  "$(ev reservation_reserve $(wk w1) , w1 60000 fpW1 86400000 600000 "$WL" W1 2 W1 W2 1 W2) $(rc hget 'inv:{W1}' reserved)"
expect "the id with another request conflicts" "conflict" \
  "$(ev reservation_reserve $(wk w1) , w1 60000 fpOther 86400000 600000 "$WL" W1 2 W1 W2 1 W2)"
expect "a short line: refused with its shortage, the other line not held" \
  "rejected 0 [[\"W2\",5,1]] 2 1 0 rejected" \
  "$(ev reservation_reserve $(wk w2) , w2 60000 fpW2 86400000 600000 '[["W1",1,0],["W2",5,0]]' W1 1 W1 W2 5 W2) $(rc hget 'inv:{W1}' reserved) $(rc hget 'inv:{W2}' reserved) $(has W1 w2) $(recf w2 state)"
expect "a bucket Redis does not have: -1 and its line, nothing written" "-1 2 2 " \
  "$(ev reservation_reserve $(rk w3) $(kk W1) inv:expiries:1 $(kk W9) inv:expiries:9 , w3 60000 fpW3 86400000 600000 '[["W1",1,0],["W9",1,0]]' W1 1 W1 W9 1 W9) $(rc hget 'inv:{W1}' reserved) $(recf w3 state)"
expect "each bucket once" "ERR reservation_reserve: each bucket once" \
  "$(ev reservation_reserve $(rk w4) $(kk W1) inv:expiries:1 $(kk W1) inv:expiries:1 , w4 60000 fpW4 86400000 600000 '[["W1",2,0]]' W1 1 W1 W1 1 W1)"
expect "KEYS and lines must agree (reserve)" \
  "ERR reservation_reserve: one line (5 KEYS, 3 arguments) at least, and as many KEYS as arguments" \
  "$(ev reservation_reserve $(wk w4) , w4 60000 fpW4 86400000 600000 "$WL" W1 2 W1)"
expect "a zero quantity is an error, nothing written" "ERR reservation_reserve: qty must be an integer >= 1 2" \
  "$(ev reservation_reserve $(wk w4) , w4 60000 fpW4 86400000 600000 "$WL" W1 0 W1 W2 1 W2) $(rc hget 'inv:{W1}' reserved)"
# Commit straight from reserved when the caller knows the lines: the lease and the move in one call.
out=$(ev reservation_extend $(wk w1) , w1 reserved committing 600000 1200000 1 "$WL" W1 0 W1 W2 0 W2)
expect_re "reserved -> committing: every hold's lease and the move in one call" "^1 committing [0-9]{13} \\[\\[" "$out"
expect "then the commit sells both lines" "1 committed $(cut -d' ' -f3 <<<"$out") $WL 2 3 0 2 1 1 1 0 1 1 1" \
  "$(ev reservation_commit $(rk w1) $(kk W1) $(kk W2) , w1 86400000 "$WL" W1 0 W2 0)"

echo "all $n checks passed"
