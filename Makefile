# Sfera's two commands: `make run` and `make test`. Both install what they
# need from Debian's packages first (only what is missing), so a fresh
# Debian 12 machine needs nothing else. See README.md.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
GUEST_DIR := target/guest
DATA_DIR ?= .sfera

# What `make run` needs: QEMU (TCG guests and qemu-storage-daemon), the
# guest image's ingredients, and the toolchain of sfera-vmm's test guest
# (vmm/testguest: gcc, as/ld from binutils, make).
RUN_DEBS := qemu-system-x86 qemu-system-common busybox-static cpio kmod zstd fio iperf3 e2fsprogs \
	gcc binutils make
# What `make test` needs on top: namespaces, DPDK's testpmd with the virtio
# and vhost PMDs, and Open vSwitch built with DPDK.
TEST_DEBS := $(RUN_DEBS) iproute2 iputils-ping coreutils util-linux curl lz4 dpdk dpdk-dev \
	librte-net-virtio23 librte-net-vhost23 librte-mempool-ring23 \
	openvswitch-switch-dpdk

.PHONY: help run test deps-run deps-test guest-image testguest build build-release lint bench bench-blk bench-net bench-vmm clean

help:
	@echo "make run    install what is missing, build, and start Sfera (data in $(DATA_DIR))"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make guest-image   build the test guest (kernel + initramfs) into $(GUEST_DIR)"
	@echo "make testguest     build sfera-vmm's CPL3 test guest (vmm/testguest/build/testguest.elf)"
	@echo "make lint   rustfmt and clippy"
	@echo "make bench  every benchmark against its peer (results in bench/results/*.json)"
	@echo "make bench-blk  sfera-blockd vs qemu-storage-daemon (libblkio client)"
	@echo "make bench-net  sfera-vswitchd vs Open vSwitch with DPDK (testpmd as the VMs)"
	@echo "make bench-vmm  sfera-vmm vs QEMU microvm on the test guest (start, memory, disk IOPS)"

deps-run:
	@appliance/host/install-debs.sh $(RUN_DEBS)

deps-test:
	@appliance/host/install-debs.sh $(TEST_DEBS)

# The builder caches its output and rebuilds only when its inputs change.
guest-image:
	@tests/guest/build.sh $(GUEST_DIR)

# sfera-vmm's bare-metal test guest (PVH ELF, gcc/as/ld only; make's own
# dependency tracking rebuilds it only when its sources change).
testguest:
	@$(MAKE) --no-print-directory -C vmm/testguest

build-release:
	$(CARGO) build --release --workspace --locked

run: deps-run
	@$(MAKE) --no-print-directory guest-image testguest build-release
	./target/release/sfera-tryout --data-dir $(DATA_DIR)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: deps-test
	@$(MAKE) --no-print-directory guest-image testguest lint
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run --workspace --locked --profile ci

# Benchmarks run Sfera and its peer in the same run and report the ratio.
bench: bench-blk bench-net bench-vmm

bench-blk: deps-test build-release
	./target/release/sfera-bench-blk

bench-net: deps-test build-release
	./target/release/sfera-bench-net

# Only what this benchmark runs, in release: sfera-vmm, sfera-blockd and
# the benchmark itself (the harness finds the daemons next to it).
bench-vmm: deps-test testguest
	$(CARGO) build --release --locked -p sfera-vmm -p sfera-blockstore -p sfera-bench --bins
	./target/release/sfera-bench-vmm

clean:
	$(CARGO) clean
