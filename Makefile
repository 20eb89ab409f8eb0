# Sfera's two commands: `make run` and `make test`. Both install what they
# need from Debian's packages first (only what is missing), so a fresh
# Debian 12 machine needs nothing else. See README.md.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
GUEST_DIR := target/guest
DATA_DIR ?= .sfera

# What `make run` needs: QEMU (TCG guests and qemu-storage-daemon) and the
# guest image's ingredients.
RUN_DEBS := qemu-system-x86 qemu-system-common busybox-static cpio kmod zstd fio iperf3 e2fsprogs
# What `make test` needs on top: namespaces, DPDK's testpmd with the virtio
# and vhost PMDs, and Open vSwitch built with DPDK.
TEST_DEBS := $(RUN_DEBS) iproute2 iputils-ping coreutils util-linux curl dpdk dpdk-dev \
	librte-net-virtio23 librte-net-vhost23 librte-mempool-ring23 \
	openvswitch-switch-dpdk

# What `make iso` needs: mmdebstrap for the root file system, squashfs,
# GRUB for BIOS and UEFI, and xorriso and mtools that grub-mkrescue drives.
ISO_DEBS := mmdebstrap zstd squashfs-tools xorriso mtools dosfstools grub-common \
	grub-pc-bin grub-efi-amd64-bin git
# What `make test-appliance` needs on top: QEMU, UEFI firmware (OVMF),
# mke2fs for the answer disk, curl for the API.
APPLIANCE_TEST_DEBS := $(ISO_DEBS) qemu-system-x86 ovmf e2fsprogs curl
# The binaries the ISO holds (sfera-vmm too once the workspace has it).
ISO_PACKAGES := -p sfera-blockstore -p sfera-vswitch -p sfera-mgmt -p sfera-appliance
# Tests that need the ISO; `make test` leaves them to `make test-appliance`.
APPLIANCE_TESTS := binary(appliance_install)

.PHONY: help run test deps-run deps-test deps-iso deps-appliance guest-image build build-release lint bench bench-blk bench-net clean iso test-appliance

help:
	@echo "make run    install what is missing, build, and start Sfera (data in $(DATA_DIR))"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make guest-image   build the test guest (kernel + initramfs) into $(GUEST_DIR)"
	@echo "make iso    build the installable ISO into target/appliance/sfera.iso"
	@echo "make test-appliance  install the ISO unattended under QEMU (BIOS and UEFI) and reach the console"
	@echo "make lint   rustfmt and clippy"
	@echo "make bench  every benchmark against its peer (results in bench/results/*.json)"
	@echo "make bench-blk  sfera-blockd vs qemu-storage-daemon (libblkio client)"
	@echo "make bench-net  sfera-vswitchd vs Open vSwitch with DPDK (testpmd as the VMs)"

deps-run:
	@appliance/host/install-debs.sh $(RUN_DEBS)

deps-test:
	@appliance/host/install-debs.sh $(TEST_DEBS)

deps-iso:
	@appliance/host/install-debs.sh $(ISO_DEBS)

deps-appliance:
	@appliance/host/install-debs.sh $(APPLIANCE_TEST_DEBS)

# The builder caches its output and rebuilds only when its inputs change.
guest-image:
	@tests/guest/build.sh $(GUEST_DIR)

build-release:
	$(CARGO) build --release --workspace --locked

run: deps-run
	@$(MAKE) --no-print-directory guest-image build-release
	./target/release/sfera-tryout --data-dir $(DATA_DIR)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: deps-test
	@$(MAKE) --no-print-directory guest-image lint
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run --workspace --locked --profile ci -E 'not $(APPLIANCE_TESTS)'

# The ISO: Debian's packages (the root file system is cached in
# target/appliance, keyed by appliance/iso/rootfs.sh), Sfera's release
# binaries, the test guest as the Tiny Linux template.
iso: deps-iso
	@$(MAKE) --no-print-directory guest-image
	$(CARGO) build --release --locked $(ISO_PACKAGES) --bins
	appliance/iso/build.sh target/appliance

# Installs the ISO under QEMU TCG, unattended, on BIOS and UEFI, and checks
# the installed system's console banner, health endpoint and login.
test-appliance: deps-appliance iso
	$(CARGO) nextest run -p sfera-tests --locked --profile ci -E '$(APPLIANCE_TESTS)'

# Benchmarks run Sfera and its peer in the same run and report the ratio.
bench: bench-blk bench-net

bench-blk: deps-test build-release
	./target/release/sfera-bench-blk

bench-net: deps-test build-release
	./target/release/sfera-bench-net

clean:
	$(CARGO) clean
