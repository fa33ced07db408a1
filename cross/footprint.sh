#!/usr/bin/env bash
# Footprint summary: wheel sizes per arch, plus the x86_64 host reference (an out-of-tree,
# stripped host wheel and VmRSS of `import rtk_qos._core` with Debian's python3).
# The per-arch installed size and VmRSS under qemu come from cross/test_wheel.sh (results-<arch>.txt).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
out="$CROSS_CACHE/footprint.txt"
bvenv="$CROSS_CACHE/build-venv"
[ -e "$bvenv/.complete" ] || { log "run cross/wheel.sh first (it creates the build venv)"; exit 1; }

# Host wheel, built like the cross ones (copy of the tree, stripped) so sizes compare.
work="$CROSS_CACHE/wheel-build/host"; dist="$CROSS_CACHE/dist-host"
rm -rf "$work" "$dist"; mkdir -p "$work" "$dist"
tar -C "$REPO_DIR" --exclude='__pycache__' --exclude='*.so' --exclude='src/rtk_qos/_core.c' \
    --exclude='native/build' -cf - setup.py pyproject.toml README.md native src | tar -C "$work" -xf -
(cd "$work" && LDFLAGS=-s "$bvenv/bin/python" setup.py -q bdist_wheel -d "$dist" >build.log 2>&1) \
  || { tail -20 "$work/build.log"; exit 1; }

# Host RSS with the host wheel unpacked into a scratch site dir (same Debian python3 as the rootfs).
site="$work/site"; mkdir -p "$site"; unzip -q -o "$dist"/*.whl -d "$site"
rss='import re; print(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))'
median3() { for _ in 1 2 3; do PYTHONPATH="$site" /usr/bin/python3 -c "$1"; done | sort -n | sed -n 2p; }
base=$(median3 "$rss"); with=$(median3 "import rtk_qos._core; $rss")
isize() { du -sk --apparent-size --exclude=__pycache__ "$@" "$site/rtk_qos" "$site"/rtk_qos-*.dist-info | awk '{s+=$1} END {print s}'; }
{
  echo "== wheels (bytes; _core .so stripped)"
  for w in "$CROSS_CACHE"/dist/*.whl "$dist"/*.whl; do
    so=$(unzip -Zl "$w" | awk '/_core.*\.so$/ {print $4}')
    printf '%-52s %8s  (.so %s)\n' "$(basename "$w")" "$(stat -c %s "$w")" "$so"
  done
  echo "== x86_64 host (Debian python3 $(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'))"
  echo "installed rtk_qos: $(isize) KiB (without _core.c: $(isize --exclude=_core.c) KiB)"
  echo "VmRSS (median of 3): bare python3 $base KiB, after import rtk_qos._core $with KiB (+$((with - base)) KiB)"
  for r in "$CROSS_CACHE"/results-*.txt; do [ -e "$r" ] && cat "$r"; done
} | tee "$out"
