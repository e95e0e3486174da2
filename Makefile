# vnicd — see README.md. `make demo` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# dpdk-testpmd ships in dpdk-dev; libdpdk-dev brings headers and libdpdk.pc.
APT_PKGS := dpdk dpdk-dev libdpdk-dev clang libclang-dev pkg-config
# The VM test's QEMU and the busybox its guest initramfs is made of (deploy/guest/build.sh);
# Prometheus and promtool for the metrics test, systemd-analyze and systemd-tmpfiles for the
# unit-file test (Debian's policy-rc.d here keeps the prometheus package's own service stopped;
# the test runs a private one).
VM_PKGS := qemu-system-x86 busybox-static prometheus systemd

.PHONY: all deps bench-deps hugepages build demo test deb bench bench-quick fuzz fmt clippy clean

all: build

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@missing=""; for p in $(VM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked
	@$(SUDO) ./deploy/hugepages.sh

hugepages:
	@$(SUDO) ./deploy/hugepages.sh

build: deps
	$(CARGO) build --release --workspace

# The main job on the embedded default config: testpmd wire + vnicd + reflecting client, ~20 s.
demo: build
	./target/release/vnicd --preflight
	./target/release/vnic-demo --seconds $${DEMO_SECONDS:-20}

test: deps
	$(CARGO) nextest run --workspace
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The Debian package (target/deb/vnicd_VERSION_ARCH.deb): binaries, units, completion, man pages.
deb: build
	./deploy/deb/build.sh

# Open vSwitch with DPDK, only for the benchmark's baseline-ovs (tests do not need it). The
# harness runs its own private instance; the package's system service is not used.
bench-deps: deps
	@dpkg -s openvswitch-switch-dpdk >/dev/null 2>&1 || { \
	  echo "bench-deps: installing openvswitch-switch-dpdk"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q openvswitch-switch-dpdk; }

# Line-rate comparison: vnicd vs dpdk-testpmd io vs OVS-DPDK, plus scale, failover, reload
# (~25 min; results, Markdown and SVG plots in bench/results/).
bench: build bench-deps
	./target/release/vnic-bench

# The same comparison in under 2 minutes (1 round, short trials).
bench-quick: build bench-deps
	./target/release/vnic-bench --quick

# Coverage-guided fuzzing with AFL++ (the afl crate builds it; works on stable Rust, offline).
# Each target runs FUZZ_EXECS executions from the committed corpus in fuzz/corpus/.
FUZZ_EXECS ?= 10000000
FUZZ_TARGETS ?= proto_parse config_parse
fuzz: deps
	@command -v cargo-afl >/dev/null 2>&1 || $(CARGO) install cargo-afl --locked
	@cargo afl config --build >/dev/null 2>&1 || cargo afl config --build --force
	cd fuzz && $(CARGO) afl build --release
	cd fuzz && mkdir -p out && for t in $(FUZZ_TARGETS); do \
	  c=$${t%_parse}; \
	  AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
	    $(CARGO) afl fuzz -i corpus/$$c -o out/$$c -E $(FUZZ_EXECS) target/release/$$t >out/$$c.log 2>&1 & \
	done; wait; \
	for t in $(FUZZ_TARGETS); do c=$${t%_parse}; \
	  grep -E "execs_done|saved_crashes|saved_hangs" out/$$c/default/fuzzer_stats | sed "s/^/$$t: /"; \
	  test "$$(awk '/saved_crashes|saved_hangs/ {s+=$$3} END {print s}' out/$$c/default/fuzzer_stats)" = 0 || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
