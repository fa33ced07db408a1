#!/usr/bin/env python3
"""Boot the router-kernel guest and run pytest in it.

The guest is Debian's kernel under qemu's emulation (TCG: nested KVM hangs on these machines)
with this machine's root, read-only over virtio-9p under a tmpfs overlay, as its root, so it has
the same Python, venv, pytest and worktree. It has no network device: test traffic stays in the
guest's loopback and namespaces. The guest console (pytest's output) is streamed here; every
step has a time limit, and the exit status is pytest's in the guest.

Usage: run.py [--kernel RELEASE] [--build DIR] [--report FILE] [limits] [-- PYTEST_ARGS...]
       (default PYTEST_ARGS: -m guest tests)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

RIG = Path(__file__).resolve().parent
REPO = RIG.parents[2]
DEFAULT_PYTEST_ARGS = ["-m", "guest", "tests"]
# Printed by the guest's second stage (stage2.sh) once it runs inside the host root.
UP_MARKER = "rtk-qos-guest: kernel "
BOOT_FAILED = "rtk-qos-guest: boot failed"
SHARE = "/run/rtk-qos-guest"  # where the results share is mounted in the guest


class RigError(Exception):
    """A precondition of the rig is not met; the message says what to do."""


def release_key(release: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", release)]


def find_kernel(release: str | None) -> str:
    """The requested kernel release, or the newest in /boot whose modules are installed."""
    found = [Path(p).name[len("vmlinuz-"):] for p in glob.glob("/boot/vmlinuz-*")]
    usable = [r for r in found if Path(f"/lib/modules/{r}/modules.dep").is_file()]
    if release:
        if release not in usable:
            raise RigError(f"kernel {release}: no /boot/vmlinuz-{release} with modules in /lib/modules "
                           f"(usable: {', '.join(usable) or 'none'})")
        return release
    if not usable:
        raise RigError("no kernel in /boot with modules in /lib/modules: install linux-image-amd64 "
                       "(make test-guest does)")
    return max(usable, key=release_key)


def build_initramfs(release: str, build: Path, limit: float) -> Path:
    """Rebuilt when missing or older than the rig's scripts or the kernel's module list."""
    target = build / f"initramfs-{release}.cpio.gz"
    sources = [RIG / "init", RIG / "initramfs.sh", Path(f"/lib/modules/{release}/modules.dep")]
    if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return target
    try:
        subprocess.run([str(RIG / "initramfs.sh"), release, str(target)], check=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise RigError(f"building the initramfs took more than {limit:.0f} s") from None
    except subprocess.CalledProcessError as exc:
        raise RigError(f"building the initramfs failed (exit {exc.returncode}, see above)") from None
    return target


def write_job(results: Path, pytest_args: list[str]) -> None:
    """The script the guest runs: probe the kernel's features, then pytest from the worktree."""
    python = shlex.quote(sys.executable)
    lines = [
        "set -u",
        f"cd {shlex.quote(str(REPO))}",
        # The guest's root is an overlay that vanishes at power-off: no bytecode or caches to keep.
        "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
        # Not RTK_QOS_*: the agent takes those for its own settings.
        f"export GUEST_KERNEL_FEATURES={SHARE}/features.json",
        f"{python} tests/guest/features.py --output {SHARE}/features.json || exit 3",
        # The tests' temporary files (agent and broker logs) land in the share, kept for a look afterwards.
        # Through a pipe: on the console (a terminal) pytest would redraw its collection count.
        "set -o pipefail",
        f"{python} -m pytest -p no:cacheprovider --durations=5 --junitxml={SHARE}/junit.xml --basetemp={SHARE}/tmp "
        + " ".join(shlex.quote(a) for a in pytest_args) + " 2>&1 | cat",
    ]
    (results / "job.sh").write_text("\n".join(lines) + "\n")


def qemu_argv(release: str, initramfs: Path, results: Path, args) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise RigError("qemu-system-x86_64 not found: install qemu-system-x86 (make test-guest does)")
    stage2 = RIG / "stage2.sh"
    if re.search(r"\s", str(stage2)):
        raise RigError(f"the worktree path has white space, which the kernel command line cannot carry: {stage2}")
    cmdline = ["console=ttyS0", "loglevel=3", "panic=-1", "mitigations=off", f"rtkq.stage2={stage2}"]
    return [
        qemu, "-accel", args.accel, "-cpu", "max", "-smp", str(args.cpus), "-m", args.memory,
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-monitor", "none", "-nic", "none",
        "-kernel", f"/boot/vmlinuz-{release}", "-initrd", str(initramfs), "-append", " ".join(cmdline),
        # multidevs=remap: the host root spans several file systems; their inode numbers must not collide.
        "-fsdev", "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=results,path={results},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
        "-device", "virtio-rng-pci",
    ]


def stream(proc: subprocess.Popen, args) -> tuple[float | None, str | None]:
    """Copy the console to stdout until qemu exits. Returns (seconds until the guest was up,
    why it was stopped or None)."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    start = last_output = time.monotonic()
    up_after = None
    while True:
        now = time.monotonic()
        limits = [(start + args.timeout, f"the guest run took more than {args.timeout:.0f} s"),
                  (last_output + args.idle_timeout, f"the guest printed nothing for {args.idle_timeout:.0f} s")]
        if up_after is None:
            limits.append((start + args.boot_timeout, f"the guest was not up within {args.boot_timeout:.0f} s "
                           "(kernel, initramfs or 9p root; its console is above)"))
        deadline, reason = min(limits)
        try:
            line = lines.get(timeout=max(0.0, min(deadline - now, 1.0)))
        except queue.Empty:
            if time.monotonic() >= deadline:
                return up_after, reason
            continue
        if line is None:
            return up_after, None
        last_output = time.monotonic()
        print(line, flush=True)
        if up_after is None and line.startswith(UP_MARKER):
            up_after = last_output - start
        if line.startswith(BOOT_FAILED):
            return up_after, line[len("rtk-qos-guest: "):]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def junit_summary(path: Path) -> dict | None:
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = [{"test": f"{c.get('classname')}::{c.get('name')}", "seconds": round(float(c.get("time", 0)), 1),
              "outcome": next((child.tag for child in c if child.tag in ("failure", "error", "skipped")), "passed")}
             for c in suite.iter("testcase")]
    return {"tests": len(cases), "failures": int(suite.get("failures", 0)), "errors": int(suite.get("errors", 0)),
            "skipped": int(suite.get("skipped", 0)), "pytest_seconds": round(float(suite.get("time", 0)), 1),
            "cases": cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", help="kernel release in /boot (default: the newest with modules)")
    parser.add_argument("--build", type=Path, default=REPO / "build" / "guest")
    parser.add_argument("--report", type=Path, help="JSON report (default: BUILD/report.json)")
    parser.add_argument("--accel", default="tcg")
    # One CPU: the netem test took as long as with two (93-98 s against 95-115 s) and its
    # replies kept their order (two CPUs delivering reordered one now and then).
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--memory", default="2G")
    # Measured on a busy 2-core machine: up after 6-14 s, the whole run 162 s, at most ~80 s without
    # output (the netem test). The limits leave 5-20x for a slower machine, not more: a hung
    # guest must not eat `make test`'s time.
    parser.add_argument("--boot-timeout", type=float, default=180, help="seconds until the guest is up")
    parser.add_argument("--idle-timeout", type=float, default=400, help="seconds without console output")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds for the whole run")
    parser.add_argument("pytest_args", nargs="*", help="arguments to pytest in the guest (after --)")
    args = parser.parse_args()
    pytest_args = args.pytest_args or DEFAULT_PYTEST_ARGS
    wall0 = time.monotonic()
    try:
        release = find_kernel(args.kernel)
        args.build.mkdir(parents=True, exist_ok=True)
        initramfs = build_initramfs(release, args.build, limit=120)
        results = args.build / "results"
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir()
        write_job(results, pytest_args)
        argv = qemu_argv(release, initramfs, results, args)
    except RigError as exc:
        print(f"guest rig: {exc}", file=sys.stderr)
        return 2
    print(f"guest rig: booting kernel {release} ({args.accel}, {args.cpus} CPUs, {args.memory}); "
          f"in the guest: pytest {' '.join(pytest_args)}", flush=True)
    boot0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    up_after, stopped = stream(proc, args)
    if stopped:
        stop(proc)
    else:
        proc.wait()
    guest_seconds = time.monotonic() - boot0
    status_file = results / "exit-status"
    status = int(status_file.read_text()) if status_file.exists() else None
    features = results / "features.json"
    report = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "kernel": release, "accel": args.accel, "cpus": args.cpus, "memory": args.memory,
        "pytest_args": pytest_args, "pytest_exit_status": status,
        "seconds": {"up": None if up_after is None else round(up_after, 1), "guest": round(guest_seconds, 1),
                    "total_wall": round(time.monotonic() - wall0, 1)},
        "stopped": stopped, "qemu_exit_status": proc.returncode,
        "features": json.loads(features.read_text()) if features.exists() else None,
        "pytest": junit_summary(results / "junit.xml"),
    }
    report_path = args.report or args.build / "report.json"
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    up = "not up" if up_after is None else f"up after {up_after:.0f} s"
    print(f"guest rig: {guest_seconds:.0f} s wall in the guest ({up}); report {report_path}", flush=True)
    if stopped:
        print(f"guest rig: FAILED: {stopped}; qemu stopped", file=sys.stderr)
        return 1
    if status is None:
        print(f"guest rig: FAILED: the guest stopped (qemu exit {proc.returncode}) before its job finished; "
              "its console is above", file=sys.stderr)
        return 1
    if status != 0:
        print(f"guest rig: FAILED: pytest in the guest exited {status}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
