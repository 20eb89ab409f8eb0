#!/bin/bash
# Manual runs of the test guest under QEMU on KVM (see README.md).
#
#   run-qemu.sh guest [--microvm] [--rng] [--blk FILE] [--net LOCAL:PEER[:MAC]] [-- WORD...]
#       one guest; WORDs go on its command line. --microvm uses QEMU's
#       microvm with PCIe (ECAM, no firmware to speak of) instead of -M pc.
#   run-qemu.sh check-disk FILE SEED SECTOR COUNT
#       checks FILE holds the guest's pattern for SECTOR..SECTOR+COUNT.
#   run-qemu.sh demo [--microvm]
#       rng + blk on a temporary raw file (then the file is checked), and
#       two guests that ping and pong over a loopback UDP socket netdev.
#
# Exit status 0 when every guest printed "SFERA-TESTGUEST done status=ok".

set -eu -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ELF=$HERE/build/testguest.elf
QEMU=${QEMU:-qemu-system-x86_64}

die() { echo "run-qemu.sh: $*" >&2; exit 2; }

build() { make -s -C "$HERE" >/dev/null; }

# The CPU model this KVM accepts: -cpu host, or without the
# IA32_ARCH_CAPABILITIES MSR that some KVMs refuse to set (QEMU then aborts
# creating the vCPU). The tests probe the same way (tests/src/qemu_kvm.rs).
kvm_cpu() {
	local model
	for model in host host,-arch-capabilities; do
		if echo quit | "$QEMU" -accel kvm -cpu "$model" -M microvm -nodefaults \
			-no-user-config -display none -S -monitor stdio >/dev/null 2>&1; then
			echo "$model"
			return
		fi
		echo "run-qemu.sh: QEMU on this KVM refuses -cpu $model" >&2
	done
	die "QEMU starts on this KVM with no CPU model tried"
}

# Prints each console line with the seconds since QEMU was started.
stamp() {
	local t0=${EPOCHREALTIME/./} line d
	while IFS= read -r line; do
		d=$((${EPOCHREALTIME/./} - t0))
		printf '%3d.%03d %s\n' $((d / 1000000)) $((d / 1000 % 1000)) "${line%$'\r'}"
	done
}

guest() {
	local microvm=0 args=() words=()
	while [ $# -gt 0 ]; do
		case $1 in
		--microvm) microvm=1 ;;
		--rng) args+=(-device virtio-rng-pci,disable-legacy=on) ;;
		--blk)
			args+=(-drive "file=$2,if=none,id=d0,format=raw"
				-device virtio-blk-pci,drive=d0,disable-legacy=on,serial=sfera-testdisk)
			shift ;;
		--net)
			local local_port peer_port mac
			IFS=: read -r local_port peer_port mac <<<"$2"
			args+=(-netdev "socket,id=n0,udp=127.0.0.1:$peer_port,localaddr=127.0.0.1:$local_port"
				-device "virtio-net-pci,netdev=n0,disable-legacy=on${mac:+,mac=$mac}")
			shift ;;
		--) shift; words=("$@"); break ;;
		*) die "unknown option $1" ;;
		esac
		shift
	done
	local machine=(-M pc)
	if [ $microvm = 1 ]; then
		# microvm has no conf1 and no i8042: the guest uses ECAM and
		# resets by triple fault (which -no-reboot also ends).
		machine=(-M microvm,pcie=on,rtc=off)
		words=(pci.ecam=0xe0000000 "${words[@]}")
	fi
	local cpu
	cpu=$(kvm_cpu)
	"$QEMU" -accel kvm -cpu "$cpu" "${machine[@]}" -m 256 -nodefaults \
		-display none -no-reboot -serial stdio -kernel "$ELF" -append "${words[*]}" \
		"${args[@]}" 2>&1 | stamp
}

check_disk() {
	python3 - "$@" <<'EOF'
import struct, sys
M = (1 << 64) - 1
def word(seed, sector, i):
    z = ((seed << 32) + sector * 64 + i + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
path, seed, start, count = sys.argv[1], *(int(a, 0) for a in sys.argv[2:5])
with open(path, "rb") as f:
    f.seek(start * 512)
    data = f.read(count * 512)
for s in range(count):
    want = struct.pack("<64Q", *(word(seed, start + s, i) for i in range(64)))
    if data[s * 512:(s + 1) * 512] != want:
        sys.exit(f"sector {start + s}: not the pattern")
print(f"check-disk: sectors {start}..{start + count - 1} hold the pattern (seed {seed})")
EOF
}

ok() { grep -q 'SFERA-TESTGUEST done status=ok' "$1"; }

demo() {
	local vm=()
	[ "${1:-}" = --microvm ] && vm=(--microvm)
	dir=$(mktemp -d)
	trap 'rm -rf "$dir"' EXIT
	truncate -s 64M "$dir/disk.raw"
	echo "== rng + blk"
	guest "${vm[@]}" --rng --blk "$dir/disk.raw" -- require=rng,blk blk.sector=2048 blk.count=256 blk.seed=7 \
		| tee "$dir/blk.log"
	ok "$dir/blk.log"
	check_disk "$dir/disk.raw" 7 2048 256
	echo "== net ping/pong"
	local base=$((40000 + RANDOM % 20000))
	guest "${vm[@]}" --net "$base:$((base + 1)):52:54:00:00:00:02" -- require=net net.role=pong net.count=8 \
		>"$dir/pong.log" &
	local pong=$!
	guest "${vm[@]}" --net "$((base + 1)):$base:52:54:00:00:00:01" -- require=net net.role=ping net.count=8 \
		>"$dir/ping.log"
	wait $pong
	sed 's/^/ping: /' "$dir/ping.log"
	sed 's/^/pong: /' "$dir/pong.log"
	ok "$dir/ping.log" && ok "$dir/pong.log"
	echo "== all ok"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
guest) build; guest "$@" ;;
check-disk) [ $# = 4 ] || die "check-disk FILE SEED SECTOR COUNT"; check_disk "$@" ;;
demo) build; demo "$@" ;;
*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
