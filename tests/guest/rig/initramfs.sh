#!/usr/bin/env bash
# Build the guest's initramfs from the installed Debian kernel: busybox plus the modules that
# mount this machine's root over virtio-9p (nothing is downloaded).
# Usage: initramfs.sh <kernel-release> <output.cpio.gz>
set -euo pipefail
kver=${1:?usage: initramfs.sh <kernel-release> <output.cpio.gz>}
out=${2:?usage: initramfs.sh <kernel-release> <output.cpio.gz>}
rig=$(cd "$(dirname "$0")" && pwd)
moddir=/lib/modules/$kver
[ -f "$moddir/modules.dep" ] || { echo "guest rig: no modules for kernel $kver in $moddir" >&2; exit 1; }
busybox=/bin/busybox
# The initramfs has no libraries: only a static busybox runs there (ldd fails on it).
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "guest rig: a static busybox is needed (Debian package busybox-static)" >&2; exit 1
fi

stage=$(mktemp -d "${out%/*}/initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,newroot,lib/modules/"$kver"}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
cp "$rig/init" "$stage/init"
chmod 755 "$stage/init"

# virtio-pci and 9p with everything they depend on (netfs, fscache, ...), overlayfs for a
# writable root, and the virtio RNG so the guest's first random numbers do not wait.
modules="virtio_pci 9pnet_virtio 9p overlay virtio_rng"
for path in $(modprobe -S "$kver" -a --show-depends $modules | awk '$1 == "insmod" {print $2}' | sort -u); do
  mkdir -p "$stage/$(dirname "$path")"
  cp "$path" "$stage/$path"
done
cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$stage/lib/modules/$kver/"
depmod -b "$stage" "$kver"

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) \
  | gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
echo "guest rig: $out ($(stat -c %s "$out") bytes, kernel $kver)"
