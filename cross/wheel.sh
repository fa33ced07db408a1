#!/usr/bin/env bash
# Cross-build the rtk_qos._core wheel for a Debian bookworm target with the Debian cross gcc.
# Usage: cross/wheel.sh <aarch64|armv7|mipsel>   -> $CROSS_CACHE/dist/rtk_qos-*-cp311-cp311-linux_<plat>.whl
# The host Python (3.11, same as bookworm's) runs setup.py; the target's sysconfigdata tells
# distutils the target compiler, EXT_SUFFIX and SOABI, the target headers come from a sysroot.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
arch=${1:?usage: wheel.sh <aarch64|armv7|mipsel>}
wheel_arch "$arch"
PYV=3.11
HOST_PY=${HOST_PY:-/usr/bin/python3}
# Strip debug info by default: routers have little flash (WHEEL_STRIP=0 keeps it).
WHEEL_STRIP=${WHEEL_STRIP:-1}

"$HOST_PY" -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version" \
  || { log "need a host python3.11 (Debian bookworm's) as HOST_PY"; exit 1; }

# 1. Target headers + sysconfigdata, fetched with a private apt state so the host's
#    dpkg never learns about foreign architectures.
sysroot="$CROSS_CACHE/sysroot-$DEB_ARCH"
if [ ! -e "$sysroot/.complete" ]; then
  apt_dir="$CROSS_CACHE/apt-$DEB_ARCH"
  mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$sysroot"
  touch "$apt_dir/state/status"
  kr=/usr/share/keyrings/debian-archive-keyring.gpg
  # Headers only: the point-release Python in bookworm main has the same ABI as -security's.
  printf 'deb [signed-by=%s] http://deb.debian.org/debian bookworm main\n' "$kr" > "$apt_dir/sources.list"
  apt_opts=(-o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status"
            -o "Dir::Cache=$apt_dir/cache" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
            -o "Dir::Etc::SourceParts=/nonexistent" -o "APT::Architecture=$DEB_ARCH"
            -o "APT::Architectures=$DEB_ARCH" -o "APT::Sandbox::User=root")
  # Retried: a mirror caught mid-sync fails with a size mismatch once in a while.
  for try in 1 2 3; do apt-get -qq "${apt_opts[@]}" update && break; [ $try = 3 ] && exit 1; sleep 10; done
  (cd "$apt_dir/debs" && apt-get -qq "${apt_opts[@]}" download \
     "libpython$PYV-dev" "libpython$PYV-minimal" "libpython$PYV-stdlib")
  for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
  # Only the sysconfigdata module goes on PYTHONPATH, never the target stdlib.
  mkdir -p "$sysroot/sysconfig"
  cp "$sysroot/usr/lib/python$PYV/_sysconfigdata__$TRIPLE.py" "$sysroot/sysconfig/"
  touch "$sysroot/.complete"
fi

# 2. Build tools in their own venv (same pins as pyproject's build-system).
bvenv="$CROSS_CACHE/build-venv"
if [ ! -e "$bvenv/.complete" ]; then
  "$HOST_PY" -m venv "$bvenv"
  "$bvenv/bin/pip" install -q "setuptools>=65" wheel "Cython>=3.0"
  touch "$bvenv/.complete"
fi

# 3. Out-of-tree copy: the host's in-place build (src/rtk_qos/*.so, _core.c, build/) stays untouched.
work="$CROSS_CACHE/wheel-build/$arch"
rm -rf "$work"; mkdir -p "$work"
tar -C "$REPO_DIR" --exclude='__pycache__' --exclude='*.so' --exclude='src/rtk_qos/_core.c' \
    --exclude='native/build' -cf - setup.py pyproject.toml README.md native src | tar -C "$work" -xf -

# 4. Cross build. CFLAGS go before distutils' own -I, so the target's Python.h and its
#    multiarch pyconfig.h win over the host's /usr/include/python3.11.
strip_flag=; [ "$WHEEL_STRIP" = 1 ] && strip_flag=-s
dist="$CROSS_CACHE/dist"; mkdir -p "$dist"
rm -f "$dist"/rtk_qos-*-"${PY_PLAT//-/_}".whl
build() {
  (cd "$work" && env \
    _PYTHON_HOST_PLATFORM="$PY_PLAT" \
    _PYTHON_SYSCONFIGDATA_NAME="_sysconfigdata__$TRIPLE" \
    PYTHONPATH="$sysroot/sysconfig" \
    CC="$TRIPLE-gcc" LDSHARED="$TRIPLE-gcc -shared" AR="$TRIPLE-ar" \
    CFLAGS="-I$sysroot/usr/include/python$PYV -I$sysroot/usr/include" \
    LDFLAGS="$strip_flag" \
    "$bvenv/bin/python" setup.py -q bdist_wheel -d "$dist" >build.log 2>&1) \
  || { tail -40 "$work/build.log"; exit 1; }
}
timed "wheel-$arch" build
whl=$(ls "$dist"/rtk_qos-*-"${PY_PLAT//-/_}".whl)
so=$(unzip -Z1 "$whl" | grep '_core.*\.so$')
log "built $whl ($(stat -c %s "$whl") bytes)"
(cd "$work" && unzip -o -q "$whl" "$so" -d check && file -b "check/$so" | cut -d, -f1-2 >&2)
echo "$whl"
