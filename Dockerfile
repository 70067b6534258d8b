# syntax=docker/dockerfile:1
# One image for every holdfast service: the subcommand picks what runs, e.g.
#   docker run --rm holdfast serve inventory --redis-url redis://redis:6379
#   docker run --rm holdfast migrate --store scylla://scylla:9042
# Build with `make image` (docker build where an engine runs). The Helm chart in
# charts/holdfast runs it as non-root with a read-only root filesystem.

# ---- build: the toolchain pinned in rust-toolchain.toml (1.95.0) -----------------------
FROM rust:1.95.0-slim-bookworm AS build
# protoc for holdfast-proto's build.rs; make, g++ and python3 for the bundled librdkafka's
# configure (gcc for SQLite and mimalloc comes with the image). Build-stage only: Debian
# bookworm's versions are fixed by the pinned base, so they are not pinned again here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler make g++ python3 \
    && rm -rf /var/lib/apt/lists/*
# The image's toolchain is the one rust-toolchain.toml pins; naming it here keeps rustup from
# fetching the file's extra components (rustfmt, clippy), which a release build does not use.
ENV RUSTUP_TOOLCHAIN=1.95.0
WORKDIR /src
COPY . .
# Cargo.lock is authoritative (--locked). Only the `holdfast` binary is built.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p holdfast \
    && install -D -m 0755 target/release/holdfast /out/holdfast

# ---- run: glibc + libgcc only, no shell, uid 65532 ----------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS run
COPY --from=build /out/holdfast /usr/local/bin/holdfast
# Nothing is written under / : embedded data (payments' SQLite) goes to HOLDFAST_DATA_DIR,
# which the chart mounts as an emptyDir; the root filesystem can be read-only.
ENV HOLDFAST_LISTEN=0.0.0.0:50051 \
    HOLDFAST_ADMIN_LISTEN=0.0.0.0:9464 \
    HOLDFAST_DATA_DIR=/data \
    HOLDFAST_LOG_FORMAT=json
USER 65532:65532
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["--help"]
