#!/usr/bin/env bash
# Builds the appliance's root filesystem from Debian 12 packages with
# mmdebstrap, as a tarball cached under OUT_DIR and keyed by this file: the
# package list, the mirror and the hooks are all written here, so any change
# to them makes a new tarball and an unchanged file reuses the old one.
#
# The tarball holds Debian's kernel and an initramfs with live-boot (it boots
# the ISO's squashfs with `boot=live`, and an installed disk with `root=`),
# systemd, and what Sfera needs at run time. Sfera's own files are added by
# build.sh, not here, so rebuilding Sfera does not rebuild the rootfs.
#
# Its SOURCE_DATE_EPOCH is the time of this file's last commit, so two runs
# against the same mirror state give the same tarball (mmdebstrap clamps
# timestamps and sorts the archive).
#
# mmdebstrap works in $TMPDIR (about 1.5 GB); the tarball streams straight
# into zstd, so the disk holds only the compressed result.
#
# Usage: appliance/iso/rootfs.sh OUT_DIR   (prints the tarball's path last)
set -euo pipefail

out=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

suite=bookworm
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security

packages=(
    # Boot: the generic kernel (drivers for real machines, not only VMs),
    # initramfs-tools with live-boot for the ISO, systemd as init.
    linux-image-amd64 initramfs-tools live-boot busybox zstd
    systemd systemd-sysv systemd-resolved udev dbus kmod procps
    # Network and console tools.
    iproute2 iputils-ping less
    # The installer: partitioning, file systems, copying the squashfs, GRUB
    # for both firmware types, ejecting the CD.
    gdisk parted e2fsprogs dosfstools squashfs-tools eject
    grub2-common grub-pc-bin grub-efi-amd64-bin
    # VMs: QEMU for hosts without hardware virtualization and for installers
    # (SeaBIOS comes with it); qemu-img for mgmtd's disk image import.
    qemu-system-x86 qemu-utils
    # The cluster's state store: mgmtd runs this host's etcd member itself
    # (docs/cluster.md); Debian's own etcd.service is masked below.
    etcd-server
)

key=$(sha256sum "$here/rootfs.sh" | cut -c1-16)
# The tarball's own timestamps are those of this file's last commit, not the
# ISO's commit: one tarball serves every commit that leaves this file alone,
# and any machine building it gets the same bytes from the same mirror.
SOURCE_DATE_EPOCH=$(git -C "$here" log -1 --format=%ct -- rootfs.sh 2>/dev/null || true)
[ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=$(stat -c %Y "$here/rootfs.sh")
export SOURCE_DATE_EPOCH
tarball="$out/rootfs-$key.tar.zst"
if [ -s "$tarball" ]; then
    echo "rootfs: cached $tarball" >&2
    echo "$tarball"
    exit 0
fi

# Older tarballs are of no use once the key changed; they are large.
rm -f "$out"/rootfs-*.tar.zst "$out"/rootfs-*.tar.zst.part
echo "rootfs: building $tarball with mmdebstrap (${#packages[@]} packages and their dependencies)" >&2
start=$(date +%s)
mmdebstrap \
    --mode=root \
    --variant=apt \
    --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --customize-hook='echo sfera > "$1/etc/hostname"' \
    --customize-hook='printf "127.0.0.1\tlocalhost\n127.0.1.1\tsfera\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
    --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"; : > "$1/etc/machine-id"' \
    --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/etcd.service"' \
    --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*_Packages' \
    "$suite" - \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security $suite-security main" \
    | zstd -q -T0 -o "$tarball.part"
mv "$tarball.part" "$tarball"
echo "rootfs: $(du -h "$tarball" | cut -f1) in $(( $(date +%s) - start )) s" >&2
echo "$tarball"
