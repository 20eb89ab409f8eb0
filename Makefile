# Sfera's two commands: `make run` and `make test`. Both install what they
# need from Debian's packages first (only what is missing), so a fresh
# Debian 12 machine needs nothing else. See README.md.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
GUEST_DIR := target/guest
DATA_DIR ?= .sfera
# Where `make run` serves the console and API.
LISTEN ?= 127.0.0.1:8443
# `make run` stops the VMs with mgmtd (Ctrl-C); `MGMTD_FLAGS=` leaves them
# running for the next start to adopt.
MGMTD_FLAGS ?= --stop-on-exit
WEB_DIR := mgmt/web
WEB_SRC := $(shell find $(WEB_DIR)/src $(WEB_DIR)/index.html $(WEB_DIR)/vite.config.ts $(WEB_DIR)/tsconfig.json $(WEB_DIR)/package.json -type f 2>/dev/null)

# What `make run` needs: QEMU (TCG guests and qemu-storage-daemon), qemu-img
# (disk image imports), the
# guest image's ingredients, and the toolchain of sfera-vmm's test guest
# (vmm/testguest: gcc, as/ld from binutils, make), etcd (the cluster's
# state: docs/cluster.md) and protoc, which the etcd client's build needs
# to compile etcd's API definitions.
RUN_DEBS := qemu-system-x86 qemu-system-common qemu-utils busybox-static cpio kmod zstd fio iperf3 e2fsprogs \
	gcc binutils make etcd-server protobuf-compiler
# What `make test` needs on top: namespaces, DPDK's testpmd with the virtio
# and vhost PMDs, Open vSwitch built with DPDK, lz4 (the kernel boot test
# unpacks Debian's kernel), chromium (and a font) for the web console's
# browser test, python3-venv for schemathesis, and xorriso for the ISO
# that mgmtd boots a VM from in mgmt_api.
TEST_DEBS := $(RUN_DEBS) iproute2 iputils-ping coreutils util-linux curl lz4 dpdk dpdk-dev \
	librte-net-virtio23 librte-net-vhost23 librte-mempool-ring23 \
	openvswitch-switch-dpdk chromium fonts-dejavu-core python3-venv xorriso

# What `make iso` needs: mmdebstrap for the root file system, squashfs,
# GRUB for BIOS and UEFI, and xorriso and mtools that grub-mkrescue drives.
ISO_DEBS := mmdebstrap zstd squashfs-tools xorriso mtools dosfstools grub-common \
	grub-pc-bin grub-efi-amd64-bin git protobuf-compiler
# What `make test-appliance` needs on top: QEMU, UEFI firmware (OVMF),
# mke2fs for the answer disk, curl for the API.
APPLIANCE_TEST_DEBS := $(ISO_DEBS) qemu-system-x86 ovmf e2fsprogs curl
# The binaries the ISO holds.
ISO_PACKAGES := -p sfera-blockstore -p sfera-vswitch -p sfera-mgmt -p sfera-vmm -p sfera-appliance
# Tests that need the ISO; `make test` leaves them to `make test-appliance`.
APPLIANCE_TESTS := binary(appliance_install)

.PHONY: help run test deps-run deps-test deps-web web schemathesis guest-image testguest build build-release lint bench bench-blk bench-net bench-vmm clean \
	deps-iso deps-appliance iso test-appliance fuzz fuzz-smoke fuzz-seeds mutant-blockd users

help:
	@echo "make run    install what is missing, build, and start Sfera: the console on https://$(LISTEN), data in $(DATA_DIR)"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make guest-image   build the test guest (kernel + initramfs) into $(GUEST_DIR)"
	@echo "make web   build the web console into $(WEB_DIR)/dist (npm ci, tsc, vite)"
	@echo "make schemathesis  install schemathesis (PyPI) into target/schemathesis for the OpenAPI test"
	@echo "make testguest     build sfera-vmm's CPL3 test guest (vmm/testguest/build/testguest.elf)"
	@echo "make iso    build the installable ISO into target/appliance/sfera.iso"
	@echo "make test-appliance  install the ISO unattended under QEMU (BIOS and UEFI) and reach the console"
	@echo "make lint   rustfmt and clippy"
	@echo "make fuzz-seeds  rewrite the fuzz targets' committed seed corpora after an input layout change"
	@echo "make mutant-blockd  sfera-blockd whose FLUSH skips fdatasync, for the power-loss test (target/mutant)"
	@echo "make fuzz   every fuzz target for FUZZ_SECONDS each (default 600; FUZZ_TARGETS= picks some), with executions and coverage"
	@echo "make bench  every benchmark against its peer (results in bench/results/*.json)"
	@echo "make bench-blk  sfera-blockd vs qemu-storage-daemon (libblkio client)"
	@echo "make bench-net  sfera-vswitchd vs Open vSwitch with DPDK (testpmd as the VMs)"
	@echo "make bench-vmm  sfera-vmm vs QEMU microvm on the test guest (start, memory, disk IOPS)"

deps-run: users
	@appliance/host/install-debs.sh $(RUN_DEBS)

deps-test: users
	@appliance/host/install-debs.sh $(TEST_DEBS)

# The system users sfera-blockd and sfera-vswitchd run as
# (docs/privileges.md); the appliance's image gets them from the same file.
users:
	@systemd-sysusers $(CURDIR)/appliance/rootfs/usr/lib/sysusers.d/sfera.conf

deps-iso:
	@appliance/host/install-debs.sh $(ISO_DEBS)

deps-appliance:
	@appliance/host/install-debs.sh $(APPLIANCE_TEST_DEBS)

# The builder caches its output and rebuilds only when its inputs change.
guest-image:
	@tests/guest/build.sh $(GUEST_DIR)

# The web console needs Node.js (18 or later) and npm: Debian's when there
# is none on the PATH.
deps-web:
	@command -v node >/dev/null && command -v npm >/dev/null || appliance/host/install-debs.sh nodejs npm
	@node -e 'if (+process.versions.node.split(".")[0] < 18) { console.error("Node.js " + process.version + " is too old for the web console: 18 or later"); process.exit(1) }'

# npm ci installs exactly package-lock.json; again only when it changes.
$(WEB_DIR)/node_modules/.sfera-installed: $(WEB_DIR)/package-lock.json
	cd $(WEB_DIR) && npm ci --no-audit --no-fund
	@touch $@

$(WEB_DIR)/dist/index.html: $(WEB_DIR)/node_modules/.sfera-installed $(WEB_SRC)
	cd $(WEB_DIR) && npm run build

web: deps-web
	@$(MAKE) --no-print-directory $(WEB_DIR)/dist/index.html

# schemathesis (PyPI) checks mgmtd's answers against its OpenAPI document
# (tests/tests/mgmt_openapi.rs); it lives in a venv under target/.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS := target/schemathesis/bin/st
schemathesis: $(SCHEMATHESIS)
$(SCHEMATHESIS):
	python3 -m venv target/schemathesis
	target/schemathesis/bin/pip install --quiet --disable-pip-version-check schemathesis==$(SCHEMATHESIS_VERSION)
	@test -x $@

# sfera-vmm's bare-metal test guest (PVH ELF, gcc/as/ld only; make's own
# dependency tracking rebuilds it only when its sources change).
testguest:
	@$(MAKE) --no-print-directory -C vmm/testguest

build-release:
	$(CARGO) build --release --workspace --locked

# Sfera itself: sfera-mgmtd with its daemons, the console on https://$(LISTEN).
run: deps-run deps-web
	@$(MAKE) --no-print-directory guest-image testguest build-release web
	@echo
	@echo "Sfera's console: https://$(LISTEN)/  (user admin, password in $(DATA_DIR)/admin-password)"
	@echo "The certificate is self-signed ($(DATA_DIR)/tls/cert.pem): let the browser accept it. Ctrl-C stops Sfera."
	@echo
	./target/release/sfera-mgmtd --data-dir $(DATA_DIR) --listen $(LISTEN) --web-dir $(WEB_DIR)/dist $(MGMTD_FLAGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	python3 tools/fn_length.py

# The appliance's install tests (minutes under TCG) run last, from
# test-appliance, which builds the ISO first.
test: deps-test deps-web
	@$(MAKE) --no-print-directory guest-image testguest web schemathesis lint
	$(CARGO) build --workspace --bins --locked
	@$(MAKE) --no-print-directory mutant-blockd
	$(CARGO) nextest run --workspace --locked --profile ci -E 'not $(APPLIANCE_TESTS)'
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory test-appliance

# sfera-blockd with a FLUSH that skips fdatasync (the `fault-injection`
# feature), which tests/tests/block_powerloss.rs must catch. Its own target
# directory keeps it apart from the workspace's sfera-blockd.
MUTANT_TARGET_DIR = $${CARGO_TARGET_DIR:-target}/mutant
mutant-blockd:
	$(CARGO) build --locked -p sfera-blockstore --features fault-injection --bin sfera-blockd \
		--target-dir $(MUTANT_TARGET_DIR)

# The ISO: Debian's packages (the root file system is cached in
# target/appliance, keyed by appliance/iso/rootfs.sh), Sfera's release
# binaries, the web console, the test guest as the Tiny Linux template.
iso: deps-iso deps-web
	@$(MAKE) --no-print-directory guest-image web
	$(CARGO) build --release --locked $(ISO_PACKAGES) --bins
	appliance/iso/build.sh target/appliance

# Installs the ISO under QEMU TCG, unattended, on BIOS and UEFI, and checks
# the installed system's console banner, health endpoint and login.
test-appliance: deps-appliance iso
	$(CARGO) nextest run -p sfera-tests --locked --profile ci -E '$(APPLIANCE_TESTS)'

# Coverage-guided fuzzing (libFuzzer through libfuzzer-sys, AddressSanitizer)
# of every parser of guest and API input: docs/fuzzing.md. The stable
# toolchain builds the targets (RUSTC_BOOTSTRAP=1 for the -Z flags); a C++
# compiler builds libFuzzer itself. `fuzz-smoke` is the short run `make
# test` does so that the targets keep building and running.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?=
FUZZ_DEBS := g++

fuzz:
	@appliance/host/install-debs.sh $(FUZZ_DEBS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) nice -n 10 tests/fuzz/run.sh $(FUZZ_TARGETS)

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30

# Rewrites the committed seed corpora from the code that makes them, after
# a target's input layout changed (each crate's committed_seeds_are_current
# / seeds test fails until then).
fuzz-seeds:
	SFERA_WRITE_SEEDS=1 $(CARGO) test --locked -p sfera-blockstore -p sfera-vswitch -p sfera-vmm -p sfera-mgmt \
		-- committed_seeds_are_current fuzz::tests::seeds

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
