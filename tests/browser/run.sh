#!/usr/bin/env bash
# grpc-web from a real browser: starts `holdfast dev` on free ports, then run.mjs opens a page
# served from another loopback port in headless Debian Chromium (/usr/bin/chromium, driven by
# playwright-core; no browser download) that calls CatalogService with connect-web, bearer
# tokens from `holdfast token` in the authorization header, and must see UNAUTHENTICATED
# without a token, PERMISSION_DENIED for a customer's write, a success and NOT_FOUND /
# INVALID_ARGUMENT with their codes; the same page from an origin the mesh does not allow
# (--cors-origin) must be refused by the browser.
#
# npm packages come pinned from package-lock.json, installed with `npm ci` into a cache
# outside the clone (${HOLDFAST_TOOLS:-$HOME/.cache/holdfast-tools}/browser-test/<lock hash>)
# and linked here as node_modules (git-ignored). Usage: tests/browser/run.sh path/to/holdfast
set -euo pipefail
bin="${1:?usage: run.sh path/to/holdfast}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
fail() { echo "browser-test: FAIL: $*" >&2; exit 1; }

[[ -x /usr/bin/chromium ]] || fail "/usr/bin/chromium is missing (apt-get install chromium)"
command -v npm >/dev/null || fail "node and npm are required"
command -v protoc >/dev/null || fail "protoc is required"

lock_hash="$(sha256sum "$here/package-lock.json" | cut -c1-16)"
deps="${HOLDFAST_TOOLS:-$HOME/.cache/holdfast-tools}/browser-test/$lock_hash"
if [[ ! -f "$deps/.installed" ]]; then
  echo "browser-test: installing pinned npm packages into $deps" >&2
  mkdir -p "$deps"
  cp "$here/package.json" "$here/package-lock.json" "$deps/"
  npm ci --prefix "$deps" --no-audit --no-fund >&2
  touch "$deps/.installed"
fi
ln -sfn "$deps/node_modules" "$here/node_modules"

work="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The real contract, as a descriptor set the page builds its client from.
protoc -I "$repo_root/proto" --include_imports --descriptor_set_out="$work/descriptors.bin" \
  "$repo_root/proto/holdfast/catalog/v1/catalog.proto"

# The page's origin is the one browser origin the mesh allows (--cors-origin); run.mjs also
# opens the page from a second loopback port, which must be refused.
page_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work/data" \
  --cors-origin "http://127.0.0.1:$page_port" >"$work/out" 2>"$work/err" &
pid=$!
# The binary prints one line once it is serving; wait for it (bounded).
for _ in $(seq 1 300); do
  grep -q "holdfast serving" "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; fail "holdfast dev exited"; }
  sleep 0.1
done
line="$(grep "holdfast serving" "$work/out")" || fail "no ready line"
addr="$(sed -E 's/.* on ([0-9.:]+) \(gRPC.*/\1/' <<<"$line")"

# Tokens from the dev key `holdfast dev` generated in its data dir.
admin_token="$("$bin" token --admin --data-dir "$work/data")" || fail "holdfast token --admin"
customer_token="$("$bin" token --customer browser-1 --data-dir "$work/data")" || fail "holdfast token --customer"
node "$here/run.mjs" "$addr" "$work/descriptors.bin" "$page_port" "$admin_token" "$customer_token"
