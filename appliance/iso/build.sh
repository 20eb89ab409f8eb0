#!/usr/bin/env bash
# Builds Sfera's installable ISO: a hybrid image that boots on BIOS and UEFI
# machines from a CD or written to a USB stick, made from Debian 12 packages
# and Sfera's release build only.
#
#   - rootfs.sh: Debian's kernel, systemd, live-boot, QEMU, GRUB, ... as a
#     cached tarball;
#   - Sfera's binaries (target/release), the Tiny Linux template
#     (target/guest), the web console (mgmt/web/dist), and the
#     files under appliance/rootfs (systemd units, console banner);
#   - all of it as a squashfs under /live, booted by live-boot;
#   - GRUB for BIOS (El Torito and the USB stick's MBR) and UEFI (an EFI
#     system partition image), assembled by grub-mkrescue with xorriso.
#
# Timestamps come from SOURCE_DATE_EPOCH (default: the commit's time), so two
# builds of one commit give the same squashfs and ISO.
#
# Usage: appliance/iso/build.sh [OUT_DIR]    (default target/appliance)
# Environment: SFERA_RELEASE_DIR (default target/release),
#   SFERA_GUEST_DIR (default target/guest), SFERA_ISO_WORKDIR (scratch
#   space, about 2.5 GB; default a tmpfs directory when /dev/shm has room,
#   else OUT_DIR/work).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
out=$(mkdir -p "${1:-target/appliance}" && cd "${1:-target/appliance}" && pwd)
release=${SFERA_RELEASE_DIR:-target/release}
guest=${SFERA_GUEST_DIR:-target/guest}
web=mgmt/web/dist

die() { echo "iso: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap, and the root file system's owners)"
for tool in mmdebstrap mksquashfs grub-mkrescue xorriso mformat zstd systemctl; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (make iso installs what it needs)"
done

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) \
        || die "SOURCE_DATE_EPOCH is not set and this is not a git checkout"
fi
export SOURCE_DATE_EPOCH
version=$(git describe --always --dirty 2>/dev/null || echo unknown)

bins=(sfera-mgmtd sfera-blockd sfera-vswitchd sfera-vmm sfera sfera-install)
for b in "${bins[@]}"; do
    [ -x "$release/$b" ] || die "$release/$b is missing (make iso builds it)"
done
[ -f "$web/index.html" ] || die "the web console is missing in $web (make web)"
[ -s "$guest/vmlinuz" ] && [ -s "$guest/initrd.img" ] \
    || die "the Tiny Linux template is missing in $guest (make guest-image)"

# Scratch space: the unpacked root file system and the ISO tree.
if [ -n "${SFERA_ISO_WORKDIR:-}" ]; then
    work=$SFERA_ISO_WORKDIR
elif [ "$(df -k --output=avail /dev/shm 2>/dev/null | tail -n 1)" -gt $((4 * 1024 * 1024)) ] 2>/dev/null; then
    work=/dev/shm/sfera-iso-$$
else
    work=$out/work
fi
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"
root=$work/rootfs
tree=$work/iso
mkdir -p "$root" "$tree/live" "$tree/boot/grub" "$tree/sfera"

start=$(date +%s)
tarball=$("$here/rootfs.sh" "$out")
echo "iso: unpacking the root file system"
zstd -dc "$tarball" | tar -x -C "$root" --numeric-owner --xattrs --xattrs-include='*'

echo "iso: adding Sfera ($version): ${bins[*]}"
install -d -m 0755 "$root/usr/lib/sfera/bin" "$root/usr/lib/sfera/guest" "$root/usr/share/sfera"
for b in "${bins[@]}"; do
    install -m 0755 "$release/$b" "$root/usr/lib/sfera/bin/$b"
    # Symbols stay for backtraces; the line tables go (a third of the size).
    strip --strip-debug "$root/usr/lib/sfera/bin/$b"
done
ln -sf ../lib/sfera/bin/sfera "$root/usr/bin/sfera"
ln -sf ../lib/sfera/bin/sfera-install "$root/usr/sbin/sfera-install"
install -m 0644 "$guest/vmlinuz" "$guest/initrd.img" "$root/usr/lib/sfera/guest/"
cp -r --no-preserve=ownership "$web" "$root/usr/share/sfera/web"
cp -r --no-preserve=ownership appliance/rootfs/. "$root/"
# The daemons' system users, in the image's /etc/passwd from the start.
systemd-sysusers --root="$root" "$root/usr/lib/sysusers.d/sfera.conf"
echo "$version" > "$root/etc/sfera-version"
systemctl --root="$root" --quiet enable \
    systemd-networkd.service systemd-resolved.service sfera-mgmtd.service sfera-installer.service
# The live system's console: root without a password (it is the machine's
# own screen; nothing is installed). The installer sets or locks root's
# password on the installed system.
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"

echo "iso: squashfs"
# mksquashfs takes SOURCE_DATE_EPOCH as the image's and every file's time.
# It warns "Unrecognised xattr prefix system.posix_acl_*": squashfs keeps
# security.* attributes (file capabilities such as ping's) but has no POSIX
# ACLs, so journald's ACLs on /var/log/journal are dropped (root still
# reads the journal).
mksquashfs "$root" "$tree/live/filesystem.squashfs" -noappend -quiet -no-progress \
    -comp zstd -Xcompression-level 15
cp "$(readlink -f "$root/vmlinuz")" "$tree/live/vmlinuz"
cp "$(readlink -f "$root/initrd.img")" "$tree/live/initrd.img"
install -m 0644 "$here/grub.cfg" "$tree/boot/grub/grub.cfg"
install -m 0644 "$here/answer.example.toml" "$tree/sfera/answer.example.toml"
echo "$version" > "$tree/sfera/version"
find "$tree" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

echo "iso: grub-mkrescue (BIOS and UEFI)"
iso=$out/sfera.iso
grub-mkrescue -o "$iso.part" "$tree" -- -volid SFERA >"$work/grub-mkrescue.log" 2>&1 \
    || { cat "$work/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
mv "$iso.part" "$iso"
size=$(stat -c %s "$iso")
echo "iso: $iso: $((size / 1024 / 1024)) MiB ($size bytes), squashfs $(( $(stat -c %s "$tree/live/filesystem.squashfs") / 1024 / 1024 )) MiB, built in $(( $(date +%s) - start )) s"
sha256sum "$iso" | tee "$iso.sha256"
