#!/usr/bin/env bash
# Builds Sfera's test guest ("Tiny Linux") from Debian's packages only:
#   - the kernel of linux-image-cloud-amd64 (downloaded as a .deb, never
#     installed on the host),
#   - a busybox-static initramfs holding the virtio modules that kernel builds
#     as modules (virtio_pci, virtio_blk, virtio_net, ...) with their
#     dependencies, depmod-ed,
#   - fio, iperf3 and mke2fs (as mkfs.ext4) with every shared library they
#     load,
#   - tests/guest/init (which handles the ACPI power button too: the evdev
#     and button modules, busybox acpid).
#
# Output (default target/guest): vmlinuz, initrd.img, manifest.txt, inputs.key.
# The image is rebuilt only when an input changes: this script, init, or the
# version of one of the packages it is made from.
#
# Usage: tests/guest/build.sh [OUT_DIR]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-target/guest}" && cd "${1:-target/guest}" && pwd)

die() { echo "guest image: $*" >&2; exit 1; }
for tool in apt-cache apt-get dpkg-deb dpkg-query depmod modprobe cpio zstd busybox fio iperf3 mke2fs; do
    command -v "$tool" >/dev/null \
        || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] || [ -x "/bin/$tool" ] \
        || die "'$tool' is missing (make guest-image installs busybox-static cpio kmod zstd fio iperf3 e2fsprogs)"
done
export PATH="$PATH:/usr/sbin:/sbin"

# The metapackage names the current kernel package; its version is an input.
kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(kernel_package)
if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then
    apt-get update -q >/dev/null
    kpkg=$(kernel_package)
fi
[ -n "$kpkg" ] || die "apt-cache knows no linux-image-cloud-amd64 (run apt-get update as root)"
kpkg_version=$(apt-cache policy "$kpkg" | awk '/Candidate:/ { print $2 }')

key=$(
    {
        sha256sum "$here/build.sh" "$here/init" | awk '{ print $1 }'
        echo "$kpkg $kpkg_version"
        dpkg-query -W -f '${Package} ${Version}\n' busybox-static fio iperf3 e2fsprogs
    } | sha256sum | awk '{ print $1 }'
)
if [ -f "$out/inputs.key" ] && [ "$(cat "$out/inputs.key")" = "$key" ] \
    && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
    echo "guest image: up to date in $out"
    exit 0
fi
echo "guest image: building in $out from $kpkg $kpkg_version"

work="$out/work"
rm -rf "$work"
mkdir -p "$work/deb" "$work/kernel" "$work/root"
chmod 755 "$work" "$work/deb"
(cd "$work/deb" && apt-get download -q -o APT::Sandbox::User=root "$kpkg")
dpkg-deb -x "$work"/deb/*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
[ -n "$kver" ] || die "no modules in $kpkg"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,root,etc,mnt}

# Kernel modules: the closure of what the init loads, then depmod.
depmod -b "$work/kernel" "$kver"
modules="virtio_pci virtio_blk virtio_net virtio_rng virtio_console 8021q evdev button"
for m in $modules; do
    modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" \
        | awk '$1 == "insmod" { print $2 }'
done | sort -u | while read -r ko; do
    rel=${ko#"$work/kernel"}
    mkdir -p "$root$(dirname "$rel")"
    cp "$ko" "$root$rel"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
    cp "$work/kernel/lib/modules/$kver/$f" "$root/lib/modules/$kver/"
done
depmod -b "$root" "$kver"

# Busybox, with a link per applet.
cp "$(command -v busybox)" "$root/bin/busybox"
ldd "$root/bin/busybox" >/dev/null 2>&1 && die "busybox is not static (busybox-static provides it)"
"$root/bin/busybox" --list-full | while read -r applet; do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

# fio and iperf3 with the libraries the dynamic loader resolves for them, at
# the same paths (so RUNPATHs such as ceph's keep working).
copy_with_libs() {
    local bin=$1
    install -D -m 755 "$bin" "$root$bin"
    ldd "$bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
        [ -e "$root$lib" ] && continue
        install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
    done
}
copy_with_libs "$(command -v fio)"
copy_with_libs "$(command -v iperf3)"
copy_with_libs "$(command -v mke2fs)"
for name in mkfs.ext4 mkfs.ext2; do
    ln -sf "$(command -v mke2fs)" "$root/sbin/$name"
done
[ -f /etc/mke2fs.conf ] && install -D -m 644 /etc/mke2fs.conf "$root/etc/mke2fs.conf"

install -m 755 "$here/init" "$root/init"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"

cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.new"
(cd "$root" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --reproducible --quiet) \
    | zstd -q -T0 -10 > "$out/initrd.img.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
{
    echo "kernel $kpkg $kpkg_version ($kver)"
    dpkg-query -W -f '${Package} ${Version}\n' busybox-static fio iperf3 e2fsprogs
    echo "modules: $(cd "$root" && find lib/modules -name '*.ko' | sed 's|.*/||' | sort | tr '\n' ' ')"
    echo "initrd $(du -h "$out/initrd.img" | cut -f1) compressed, $(du -sh "$root" | cut -f1) unpacked"
} > "$out/manifest.txt"
echo "$key" > "$out/inputs.key"
rm -rf "$work"
cat "$out/manifest.txt"
