#!/usr/bin/env bash
# Install the cross-built wheel into the target rootfs and exercise it under qemu-user (chroot).
# Usage: cross/test_wheel.sh <aarch64|armv7|mipsel>   (needs cross/wheel.sh and cross/rootfs.sh first)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
arch=${1:?usage: test_wheel.sh <aarch64|armv7|mipsel>}
wheel_arch "$arch"
root="$CROSS_CACHE/rootfs-$arch"
[ -e "$root/.rtk-rootfs-complete" ] || { log "no rootfs, run cross/rootfs.sh $arch"; exit 1; }
plat=${PY_PLAT//-/_}
whl=$(ls "$CROSS_CACHE"/dist/rtk_qos-*-"$plat".whl 2>/dev/null | head -1)
[ -n "$whl" ] || { log "no wheel for $plat, run cross/wheel.sh $arch"; exit 1; }
need_binfmt "$QEMU_NAME"
results="$CROSS_CACHE/results-$arch.txt"
: > "$results"
note() { echo "$*" | tee -a "$results"; }

# A wheel is a zip: unpacking it into dist-packages is what pip would do (no deps to resolve
# for _core; paho-mqtt, pure python, is added so the agent entry point imports too).
site="$root/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site"
rm -rf "$site"/rtk_qos "$site"/rtk_qos-*.dist-info
unzip -q -o "$whl" -d "$site"
if [ ! -d "$site/paho" ]; then
  pdir="$CROSS_CACHE/pydeps"
  ls "$pdir"/paho_mqtt-*.whl >/dev/null 2>&1 || "$CROSS_CACHE/build-venv/bin/pip" download -q --no-deps -d "$pdir" "paho-mqtt>=2.1,<3"
  unzip -q -o "$pdir"/paho_mqtt-*.whl -d "$site"
fi
cp "$CROSS_DIR/check_core.py" "$root/tmp/check_core.py"

# The counter reader needs /proc (netlink may be refused under qemu: it falls back to procfs).
cleanup() { mountpoint -q "$root/proc" && umount -l "$root/proc" || true; }
trap cleanup EXIT
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"; }

note "== $arch: $(basename "$whl") ($(stat -c %s "$whl") bytes)"
note "machine: $(in_root /usr/bin/python3 -c 'import platform, sys; print(platform.machine(), sys.byteorder, sys.version.split()[0])')"
note "so: $(in_root /usr/bin/python3 -c 'import rtk_qos._core as c; print(c.__file__)')"

# Known values, then a comparison of the deterministic results with the x86_64 host's.
in_root /usr/bin/python3 /tmp/check_core.py --json > "$CROSS_CACHE/check-$arch.json" 2> >(tee -a "$results" >&2)
host_json="$CROSS_CACHE/check-host.json"
# Reference: the host's in-place build in src/, else the host wheel from cross/footprint.sh.
host_site="$REPO_DIR/src"
ls "$host_site"/rtk_qos/_core*.so >/dev/null 2>&1 || host_site="$CROSS_CACHE/wheel-build/host/site"
if ! PYTHONPATH="$host_site" python3 "$CROSS_DIR/check_core.py" --json > "$host_json" 2>/dev/null; then
  note "host comparison: skipped (no host build of rtk_qos._core in src/ or from cross/footprint.sh)"
else python3 - "$host_json" "$CROSS_CACHE/check-$arch.json" <<'PY' | tee -a "$results"
import json, math, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def cmp(x, y, path):
    if isinstance(x, float) or isinstance(y, float):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (path, x, y)
        return x != y
    if isinstance(x, (list, dict)):
        assert type(x) is type(y) and len(x) == len(y), path
        keys = x.keys() if isinstance(x, dict) else range(len(x))
        return sum(cmp(x[k], y[k], f"{path}/{k}") for k in keys)
    assert x == y, (path, x, y)
    return 0
inexact = cmp(a, b, "")
print(f"host comparison: identical results ({inexact} floats differ below 1e-9)")
PY
fi

# The real command path, with the interface list limited to loopback.
t0=$(date +%s.%N)
in_root /usr/bin/python3 -m rtk_qos run qos_traffic_analysis --duration 2 --interfaces lo \
  --analysis-type basic --compact > "$CROSS_CACHE/run-$arch.json"
note "run qos_traffic_analysis: ok in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s, $(wc -c < "$CROSS_CACHE/run-$arch.json") bytes of JSON"
head -c 600 "$CROSS_CACHE/run-$arch.json"; echo

# Footprint: installed size, and VmRSS. Under qemu-user /proc/self/status is the emulator's
# own process, so the import's cost is the difference against a bare interpreter.
rss='import re; print(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))'
# Apparent size (what the files hold); a squashfs/jffs2 overlay compresses it further.
isize() { du -sk --apparent-size --exclude=__pycache__ "$@" "$site/rtk_qos" "$site"/rtk_qos-*.dist-info | awk '{s+=$1} END {print s}'; }
note "installed rtk_qos: $(isize) KiB (without the generated _core.c shipped in the wheel: $(isize --exclude=_core.c) KiB)"
median3() { for _ in 1 2 3; do in_root /usr/bin/python3 -c "$1"; done | sort -n | sed -n 2p; }
base=$(median3 "$rss")
with=$(median3 "import rtk_qos._core; $rss")
note "VmRSS under qemu (median of 3): bare python3 $base KiB, after import rtk_qos._core $with KiB (+$((with - base)) KiB)"
# The agent itself at idle (1 Hz sampling; no broker answers on port 1, so it keeps retrying).
in_root /usr/bin/python3 -m rtk_qos agent --device-id 0000000000aa --broker-host 127.0.0.1 --broker-port 1 \
  --state-dir /tmp/rtk-qos-state --log-level error > /dev/null 2>&1 &
runner=$!
sleep 15
# $! is the subshell running chroot; the agent is the emulated python3 it started.
agent=$(pgrep -n -f "rtk_qos agent --device-id 0000000000aa" || true)
agent_rss=$( [ -n "$agent" ] && awk '/VmRSS/ {print $2}' "/proc/$agent/status" 2>/dev/null || echo 0)
if [ -n "$agent" ]; then
  kill "$agent" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$agent" 2>/dev/null || break; sleep 1; done
  kill -9 "$agent" 2>/dev/null || true
fi
wait "$runner" 2>/dev/null || true
[ "$agent_rss" -gt 0 ] || { note "agent did not stay up under qemu"; exit 1; }
note "agent idle VmRSS under qemu: $agent_rss KiB (+$((agent_rss - base)) KiB over a bare python3)"
note "PASS $arch"
