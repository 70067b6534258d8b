#!/usr/bin/env bash
# Starts `holdfast dev` on free ports and checks it the way a newcomer would, with the real
# tools: grpcurl lists every service over reflection, every health name is SERVING, calls
# carry tokens from `holdfast token` (none or the wrong role is refused), a
# grpc-web request through curl answers grpc-status 0, /metrics counts the calls, and
# SIGTERM drains and exits 0. Usage: scripts/smoke.sh path/to/holdfast
set -euo pipefail
bin="${1:?usage: smoke.sh path/to/holdfast}"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

"$bin" dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
# The binary prints one line once it is serving; wait for it (bounded).
for _ in $(seq 1 300); do
  grep -q "holdfast serving" "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; fail "holdfast dev exited"; }
  sleep 0.1
done
line="$(grep "holdfast serving" "$work/out")" || fail "no ready line"
addr="$(sed -E 's/.* on ([0-9.:]+) \(gRPC.*/\1/' <<<"$line")"
admin="$(sed -E 's/.*admin on ([0-9.:]+).*/\1/' <<<"$line")"

services="$(grpcurl -plaintext "$addr" list)"
for s in holdfast.inventory.v1.InventoryService holdfast.catalog.v1.CatalogService holdfast.cart.v1.CartService \
         holdfast.orders.v1.OrderService holdfast.warehouse.v1.WarehouseService holdfast.payments.v1.PaymentsService \
         grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "grpcurl list lacks $s"
done
for name in inventory cart catalog orders warehouse payments; do
  status="$(grpcurl -plaintext -d "{\"service\":\"$name\"}" "$addr" grpc.health.v1.Health/Check)"
  grep -q '"SERVING"' <<<"$status" || fail "health $name: $status"
done
grpcurl -plaintext "$addr" describe holdfast.inventory.v1.InventoryService | grep -q "rpc Reserve" || fail "describe"

# Tokens from the dev key `holdfast dev` generated in its data dir, as the README shows.
admin_token="$("$bin" token --admin --data-dir "$work/data")" || fail "holdfast token --admin"
customer_token="$("$bin" token --customer c1 --data-dir "$work/data")" || fail "holdfast token --customer"
as_admin=(-H "authorization: Bearer $admin_token")
as_c1=(-H "authorization: Bearer $customer_token")

# A product and its stock, as an admin would set them up, then a reservation.
C=holdfast.catalog.v1.CatalogService I=holdfast.inventory.v1.InventoryService
denied="$(grpcurl -plaintext -d '{"sku":"MUG-1","on_hand":1}' "$addr" $I/SetStock 2>&1 || true)"
grep -q "Unauthenticated" <<<"$denied" || fail "SetStock without a token must be Unauthenticated: $denied"
denied="$(grpcurl -plaintext "${as_c1[@]}" -d '{"sku":"MUG-1","on_hand":1}' "$addr" $I/SetStock 2>&1 || true)"
grep -q "PermissionDenied" <<<"$denied" || fail "SetStock as a customer must be PermissionDenied: $denied"
grpcurl -plaintext "${as_admin[@]}" -d '{"product":{"sku":"MUG-1","title":"Mug","price":{"amount_minor":1299,"currency":"EUR"},"category":"kitchen","active":true}}' \
  "$addr" $C/UpsertProduct | grep -q '"created": true' || fail "catalog upsert"
grpcurl -plaintext "${as_c1[@]}" -d '{"sku":"MUG-1"}' "$addr" $C/GetProduct | grep -q '"amountMinor": "1299"' || fail "catalog get"
grpcurl -plaintext "${as_admin[@]}" -d '{"sku":"MUG-1","on_hand":1}' "$addr" $I/SetStock >/dev/null || fail "set stock"
grpcurl -plaintext "${as_c1[@]}" -d '{"reservation_id":"smoke-1","lines":[{"sku":"MUG-1","quantity":1}]}' "$addr" $I/Reserve \
  | grep -q '"RESERVED"' || fail "reserve"
grpcurl -plaintext "${as_c1[@]}" -d '{"reservation_id":"smoke-2","lines":[{"sku":"MUG-1","quantity":1}]}' "$addr" $I/Reserve \
  | grep -q '"INSUFFICIENT_STOCK"' || fail "second reserve must find no stock"
grpcurl -plaintext "${as_c1[@]}" -d '{"owner":{"customer_id":"c1"}}' "$addr" holdfast.cart.v1.CartService/GetCart >/dev/null \
  || fail "own cart"
denied="$(grpcurl -plaintext "${as_c1[@]}" -d '{"owner":{"customer_id":"c2"}}' "$addr" holdfast.cart.v1.CartService/GetCart 2>&1 || true)"
grep -q "PermissionDenied" <<<"$denied" || fail "another customer's cart must be PermissionDenied: $denied"
bad="$(grpcurl -plaintext "${as_c1[@]}" -d '{"reservation_id":"","lines":[]}' "$addr" $I/Reserve 2>&1 || true)"
grep -q "InvalidArgument" <<<"$bad" && grep -q "google.rpc.BadRequest" <<<"$bad" || fail "bad request details: $bad"

# grpc-web: HealthCheckRequest{service:"inventory"} as one frame (flag 0, length 11).
printf '\x00\x00\x00\x00\x0b\x0a\x09inventory' >"$work/req.bin"
curl -s --http1.1 -X POST -H 'content-type: application/grpc-web+proto' -H 'x-grpc-web: 1' \
  --data-binary @"$work/req.bin" -o "$work/web.out" -D "$work/web.headers" "http://$addr/grpc.health.v1.Health/Check"
grep -qi "content-type: application/grpc-web+proto" "$work/web.headers" || fail "grpc-web content type"
grep -aq "grpc-status:0" "$work/web.out" || fail "grpc-web trailers lack grpc-status:0"

metrics="$(curl -s "http://$admin/metrics")"
grep -q 'holdfast_rpc_requests_total{method="Check",service="grpc.health.v1.Health"}' <<<"$metrics" || fail "metrics"

kill -TERM "$pid"
wait "$pid" || fail "holdfast dev did not exit 0 on SIGTERM"
pid=""
echo "smoke: 1 passed, 0 failed"
