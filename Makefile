# kubetwin — the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo demo-down test tools rust crds build lint unit e2e faults bench bench-quick fmt clean-tools image

## demo: local control plane + mosquitto + operator + simulated devices, reboot visible live.
demo: tools rust build
	hack/demo.sh up

## demo-down: stops everything `make demo` started.
demo-down:
	hack/demo.sh down

## test: rustfmt check, clippy -D warnings, unit tests, CRD freshness, e2e tests, and a
## correctness-only smoke run of the benchmarks.
test: tools rust lint unit bench-quick e2e

## tools: builds the test control plane and helm from pinned Go modules; installs mosquitto,
## faketime, promtool and tmux from Debian when missing.
tools:
	hack/tools.sh

rust:
	hack/rust.sh

build:
	$(CARGO) build --locked --workspace --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --workspace --exclude kubetwin-e2e

e2e: build
	$(CARGO) test --locked -p kubetwin-e2e --tests -- --test-threads=4

## faults: the fault-injection suite at 1,000 devices (release build) plus the hostile-input
## soak; each scenario prints a NOTHING-LOST (or SOAK) line. About 15 minutes on 2 cores.
faults: tools rust
	$(CARGO) build --locked --release --workspace --bins
	set -o pipefail; KUBETWIN_BIN_PROFILE=release KUBETWIN_FAULT_DEVICES=$${KUBETWIN_FAULT_DEVICES:-1000} \
		$(CARGO) test --locked -p kubetwin-e2e --test faults -- --include-ignored --test-threads=1 --nocapture \
		2>&1 | tee target/faults.log
	@grep -oE '(NOTHING-LOST|SOAK) .*' target/faults.log

## image: builds the operator image with buildah and runs --version inside it.
image:
	hack/image.sh kubetwin/operator:dev
	hack/image.sh --check kubetwin/operator:dev

## bench: the benchmark suite B1-B9 at full size (release build); rewrites docs/benchmarks.md.
bench: tools rust
	$(CARGO) build --locked --release --workspace --bins
	KUBETWIN_BIN_PROFILE=release target/release/kubetwin-bench

bench-quick: build
	$(CARGO) run --locked -q -p kubetwin-bench --bin kubetwin-bench -- --quick

## crds: regenerates crds/ from the Rust types, and the chart's copy.
crds:
	$(CARGO) run --locked -q -p kubetwin-api --bin crdgen -- crds
	cp crds/*.yaml charts/kubetwin/crds/

fmt:
	$(CARGO) fmt --all

clean-tools:
	rm -rf .cache/tools
