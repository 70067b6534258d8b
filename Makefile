# holdfast — the two commands are `make run` and `make test`; the rest serve them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Builds land outside the clone when CARGO_TARGET_DIR is set (CI sets it to a cache).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
HOLDFAST   := $(TARGET_DIR)/debug/holdfast
NEXTEST    ?= cargo nextest run --workspace --no-fail-fast

.PHONY: help deps build run test unit lua-smoke smoke proto lint bench

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install what this machine lacks (redis-server, protoc, grpcurl, nextest)
	@scripts/install-deps.sh

build: deps ## build every crate
	cargo build --workspace

run: deps ## start the whole mesh on 127.0.0.1:50051 with embedded engines (data in ./data)
	cargo run -p holdfast -- dev

test: deps ## every test: Rust (real redis-server), Lua scripts, proto lint, CLI smoke
	$(NEXTEST)
	$(MAKE) --no-print-directory lua-smoke proto smoke

unit: deps ## only the Rust tests
	$(NEXTEST)

lua-smoke: deps ## run every Lua script against a real redis-server
	lua/smoke.sh "$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

smoke: deps ## `holdfast dev` checked with grpcurl, curl (grpc-web) and SIGTERM
	cargo build -p holdfast
	scripts/smoke.sh $(HOLDFAST)

proto: ## buf lint the contracts (buf from npm, cached outside the repo)
	scripts/buf-lint.sh

lint: deps ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

BENCH_ARGS ?=

bench: deps ## benchmarks, printed as ratios against baselines measured in the same run (release build)
	cargo build --release -p holdfast -p holdfast-load
	$(TARGET_DIR)/release/holdfast-load bench all --json $(TARGET_DIR)/bench/bench.json $(BENCH_ARGS)
