#!/usr/bin/env bash
# Cross-build the native core's C test suite for one target and run it under qemu-user.
# Usage: cross/native.sh <arch>-<libc>   (targets: ls cross/targets)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
target=${1:?usage: native.sh <arch>-<libc>}
load_target "$target"
build="$CROSS_CACHE/native/$target"
mkdir -p "$build"
# native/Makefile only tracks sources, so drop the binary when the toolchain flags change.
flags="$CC|$CFLAGS|$LDFLAGS"
if [ "$(cat "$build/flags" 2>/dev/null)" != "$flags" ]; then rm -f "$build"/test_*; echo "$flags" > "$build/flags"; fi
log "$target: CC=$CC RUN=$RUN"
timed "native-$target" make -s -C "$REPO_DIR/native" test CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" RUN="$RUN" BUILD="$build"
file -b "$build"/test_core | cut -d, -f1-3 >&2
