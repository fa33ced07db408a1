# Shared helpers for the cross/ scripts (sourced, not executed).
CROSS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$CROSS_DIR/.." && pwd)
export CROSS_CACHE=${CROSS_CACHE:-$CROSS_DIR/.cache}
mkdir -p "$CROSS_CACHE"

log() { printf '[cross] %s\n' "$*" >&2; }

# apt-get install only what is missing, so repeated runs stay offline and fast.
need_pkg() {  # need_pkg <command> <debian-package>
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }
}

# zig comes from the PyPI wheel `ziglang`, kept in a venv the Makefile controls.
need_zig() {
  if [ ! -x "$CROSS_CACHE/zig/bin/python" ] || ! "$CROSS_CACHE/zig/bin/python" -c 'import ziglang' 2>/dev/null; then
    log "creating zig venv in $CROSS_CACHE/zig"
    python3 -m venv "$CROSS_CACHE/zig"
    "$CROSS_CACHE/zig/bin/pip" install -q ziglang
  fi
}

# Load a target's toolchain file and make sure its compiler and qemu exist.
load_target() {  # load_target <arch>-<libc>
  local env="$CROSS_DIR/targets/$1.env"
  [ -f "$env" ] || { log "unknown target $1 (see cross/targets/)"; exit 2; }
  # shellcheck disable=SC1090
  source "$env"
  need_pkg "$QEMU" qemu-user-static
  if [ "$LIBC" = musl ]; then need_zig; else need_pkg "$TRIPLE-gcc" "gcc-$TRIPLE"; fi
}

# Register the qemu-user handlers with the kernel: chroot into a foreign rootfs
# execs foreign binaries (dpkg, maintainer scripts, subprocesses), which needs binfmt_misc.
need_binfmt() {  # need_binfmt <qemu-name e.g. aarch64>
  local bf=/proc/sys/fs/binfmt_misc
  [ -e "$bf/register" ] || mount -t binfmt_misc binfmt_misc "$bf"
  [ -e "$bf/qemu-$1" ] && return 0
  log "registering binfmt handler qemu-$1"
  cat "/usr/lib/binfmt.d/qemu-$1.conf" > "$bf/register"
}

# Elapsed-time recording: appends "<label> <seconds>" to the timings log.
timed() {  # timed <label> <cmd...>
  local label=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
  printf '%s %.1f\n' "$label" "$dt" | tee -a "$CROSS_CACHE/timings.log" >&2
}

# Wheel/rootfs arch names -> toolchain file, wheel platform (uname -m) and qemu binfmt name.
wheel_arch() {  # wheel_arch <aarch64|armv7|mipsel>
  case "$1" in
    aarch64) WTARGET=aarch64-glibc; PY_PLAT=linux-aarch64; QEMU_NAME=aarch64 ;;
    armv7)   WTARGET=armv7hf-glibc; PY_PLAT=linux-armv7l;  QEMU_NAME=arm ;;
    # uname -m on a mipsel kernel says "mips", hence the wheel tag linux_mips.
    mipsel)  WTARGET=mipsel-glibc;  PY_PLAT=linux-mips;    QEMU_NAME=mipsel ;;
    *) log "unknown wheel arch $1 (aarch64 armv7 mipsel)"; exit 2 ;;
  esac
  load_target "$WTARGET"
}

# Downloads from the Debian mirror can fail while it syncs: try again before giving up.
retry() {  # retry <attempts> <cmd...>
  local attempts=$1 n=1; shift
  until "$@"; do
    [ "$n" -ge "$attempts" ] && return 1
    log "attempt $n of $attempts failed: $*; retrying in $((n * 10)) s"
    sleep $((n * 10)); n=$((n + 1))
  done
}
