#!/usr/bin/env bash
# Lint the protobuf contracts in proto/ with buf (rules in proto/buf.yaml).
#
# Installs @bufbuild/buf from the npm registry, pinned, into a cache outside the repo
# (${HOLDFAST_TOOLS:-$HOME/.cache/holdfast-tools}/buf) and reuses it when that version
# is already there. Needs node and npm. Extra arguments are passed to `buf lint`, e.g.
#   scripts/buf-lint.sh --error-format=json
set -euo pipefail

BUF_VERSION="1.75.0"
TOOLS_DIR="${HOLDFAST_TOOLS:-$HOME/.cache/holdfast-tools}"
BUF_DIR="$TOOLS_DIR/buf"
BUF_BIN="$BUF_DIR/node_modules/.bin/buf"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

installed_version() {
  [[ -x "$BUF_BIN" ]] && "$BUF_BIN" --version 2>/dev/null || true
}

if [[ "$(installed_version)" != "$BUF_VERSION" ]]; then
  command -v npm >/dev/null || { echo "buf-lint: npm is required to install buf" >&2; exit 1; }
  echo "buf-lint: installing @bufbuild/buf@$BUF_VERSION into $BUF_DIR" >&2
  mkdir -p "$BUF_DIR"
  # A private package.json keeps npm from walking up into some other project.
  [[ -f "$BUF_DIR/package.json" ]] || echo '{"name":"holdfast-tools-buf","private":true}' >"$BUF_DIR/package.json"
  npm install --prefix "$BUF_DIR" --no-audit --no-fund --save-exact \
    "@bufbuild/buf@$BUF_VERSION" >&2
  got="$(installed_version)"
  if [[ "$got" != "$BUF_VERSION" ]]; then
    echo "buf-lint: expected buf $BUF_VERSION after install, found '${got:-nothing}'" >&2
    exit 1
  fi
fi

cd "$repo_root/proto"
exec "$BUF_BIN" lint "$@"
