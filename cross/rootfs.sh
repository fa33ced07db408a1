#!/usr/bin/env bash
# Minimal Debian bookworm rootfs with python3 for one target arch, for testing wheels under qemu.
# Usage: cross/rootfs.sh <aarch64|armv7|mipsel>  -> $CROSS_CACHE/rootfs-<arch>
# Cached: a finished rootfs carries a stamp and is not rebuilt; an unfinished one is redone
# from scratch because debootstrap's second stage cannot resume.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
arch=${1:?usage: rootfs.sh <aarch64|armv7|mipsel>}
wheel_arch "$arch"
root="$CROSS_CACHE/rootfs-$arch"
stamp="$root/.rtk-rootfs-complete"
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ -e "$stamp" ]; then log "rootfs-$arch is complete ($root)"; exit 0; fi

need_pkg debootstrap debootstrap
# The second stage runs dpkg and maintainer scripts of the target arch: needs binfmt_misc.
need_binfmt "$QEMU_NAME"

# Never leave /proc or /sys of a half-made rootfs mounted.
cleanup() { for m in proc sys; do mountpoint -q "$root/$m" && umount -l "$root/$m" || true; done; }
trap cleanup EXIT

if [ -d "$root" ]; then cleanup; rm -rf "$root"; fi
stage1() { rm -rf "$root"; debootstrap --foreign --arch="$DEB_ARCH" --variant=minbase \
  --include=python3 bookworm "$root" "$MIRROR"; }
timed "debootstrap-stage1-$arch" retry 3 stage1
# The binfmt handler is registered with F (fixed binary), but a copy inside the rootfs also
# serves hosts whose handler points at /usr/bin/qemu-*-static without F.
cp "$(command -v "$QEMU")" "$root/usr/bin/"
timed "debootstrap-stage2-$arch" chroot "$root" /debootstrap/debootstrap --second-stage
chroot "$root" /usr/bin/python3 -c 'import platform, sys; print("rootfs python", sys.version.split()[0], platform.machine())'
du -sm "$root" | awk -v a="$arch" '{print "rootfs-" a " size " $1 " MiB"}' | tee -a "$CROSS_CACHE/timings.log" >&2
touch "$stamp"
