#!/usr/bin/env bash
# Everything `make chart-test` checks, with the tools scripts/install-chart-tools.sh pinned:
#   1. hadolint on the Dockerfile
#   2. helm lint --strict, with the defaults and with each example values file
#   3. the chart tests (pytest): rendered manifests, the schema, kubernetes-validate --strict
#      for every Kubernetes version the chart claims, and the real binary (HOLDFAST_BIN, which
#      `make chart-test` builds) run with each Deployment's rendered command and env
#   4. checkov: --framework helm on the chart (defaults), and on each production example
#      rendered with an image digest and NetworkPolicy on; skips are explained in
#      ../.checkov.yaml and checkov-production.yaml
# Runs offline: checkov is told not to download guidelines or mappings, nor to upload.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
chart="$repo/charts/holdfast"
tools="$("$repo/scripts/install-chart-tools.sh" --print-dir)"
export PATH="$tools/bin:$PATH"  # checkov's helm runner calls `helm`
export HELM="$tools/bin/helm" KUBERNETES_VALIDATE="$tools/venv/bin/kubernetes-validate"
say() { printf '\n== chart-test: %s\n' "$*"; }

say "hadolint Dockerfile"
"$tools/venv/bin/hadolint" "$repo/Dockerfile"
echo "hadolint: clean"

say "helm lint --strict"
"$HELM" lint --strict "$chart"
for example in "$chart"/examples/*.yaml; do
  "$HELM" lint --strict --quiet "$chart" -f "$example"
done

say "chart tests (pytest)"
[[ -n "${HOLDFAST_BIN:-}" ]] || echo "chart-test: HOLDFAST_BIN unset: the tests against the real binary will skip" >&2
(cd "$chart" && "$tools/venv/bin/pytest" -q -p no:cacheprovider tests)

say "checkov"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
checkov() {
  env -u BC_API_KEY BC_SKIP_MAPPING=TRUE CKV_IGNORE_HIDDEN_DIRECTORIES=false \
    "$tools/venv-checkov/bin/checkov" "$@"
}
(cd "$chart" && checkov --config-file "$chart/.checkov.yaml" -d "$chart")
for example in "$chart"/examples/production-*.yaml; do
  "$HELM" template holdfast "$chart" -n holdfast -f "$example" \
    --set image.digest="sha256:$(printf '%064d' 0)" \
    --api-versions monitoring.coreos.com/v1/ServiceMonitor >"$rendered/$(basename "$example")"
done
checkov --config-file "$chart/tests/checkov-production.yaml" -d "$rendered"
