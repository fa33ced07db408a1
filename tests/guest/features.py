"""Which traffic-control features the running kernel has, found by using each one.

Each feature is tried for real in a scratch namespace (a qdisc attached, a filter or action
added, a link created), which also loads its module: a feature is present when the kernel
accepted it. Names are what tests ask for in `@pytest.mark.guest(needs=[...])`.

Usage: python tests/guest/features.py [--output FILE]   (JSON on stdout or into FILE)
In the guest the rig runs it once and points GUEST_KERNEL_FEATURES at the file; `probe()` reads that
file there instead of probing again.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

# name -> commands run in the namespace, each feature on its own veth {dev} (so nothing one feature
# left behind can fail the next); a command that fails means the feature is absent.
QDISCS = {
    "cake": ["tc qdisc add dev {dev} root cake bandwidth 10mbit"],
    "fq_codel": ["tc qdisc add dev {dev} root fq_codel"],
    "netem": ["tc qdisc add dev {dev} root netem delay 10ms 2ms loss 1% reorder 5%"],
    "htb": ["tc qdisc add dev {dev} root handle 1: htb default 10",
            "tc class add dev {dev} parent 1: classid 1:10 htb rate 10mbit"],
    "tbf": ["tc qdisc add dev {dev} root tbf rate 10mbit burst 10kb latency 50ms"],
    "fq": ["tc qdisc add dev {dev} root fq"],
    "sfq": ["tc qdisc add dev {dev} root sfq"],
    "prio": ["tc qdisc add dev {dev} root prio"],
    "ingress": ["tc qdisc add dev {dev} ingress"],
    "clsact": ["tc qdisc add dev {dev} clsact"],
}
_ALL = "tc filter add dev {dev} parent ffff: protocol all prio 1 u32 match u32 0 0"
CLASSIFIERS = {
    "u32": ["tc qdisc add dev {dev} ingress",
            "tc filter add dev {dev} parent ffff: protocol ip prio 1 u32 match ip protocol 1 0xff classid :1"],
    "flower": ["tc qdisc add dev {dev} ingress",
               "tc filter add dev {dev} parent ffff: protocol ip prio 1 flower ip_proto icmp classid :1"],
    "matchall": ["tc qdisc add dev {dev} ingress",
                 "tc filter add dev {dev} parent ffff: protocol all prio 1 matchall classid :1"],
}
ACTIONS = {
    "mirred": ["ip link add {dev}i type ifb", "tc qdisc add dev {dev} ingress",
               _ALL + " action mirred egress redirect dev {dev}i"],
    "police": ["tc qdisc add dev {dev} ingress", _ALL + " action police rate 1mbit burst 10k drop"],
    "gact": ["tc qdisc add dev {dev} ingress", _ALL + " action pass"],
    "skbedit": ["tc qdisc add dev {dev} ingress", _ALL + " action skbedit priority 1"],
    "connmark": ["tc qdisc add dev {dev} ingress", _ALL + " action connmark"],
}
LINKS = {
    "ifb": ["ip link add {dev}i type ifb"],
    "dummy": ["ip link add {dev}d type dummy"],
}
FEATURES = {**QDISCS, **CLASSIFIERS, **ACTIONS, **LINKS}


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def probe_kernel() -> dict:
    """Try every feature in a scratch namespace; {kernel, features: {name: bool}, errors}."""
    ns = f"rtkq-{os.getpid()}-features"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    present, errors = {}, {}
    try:
        # `ip -n`/`tc -n` enter only the network namespace: far cheaper than `ip netns exec`,
        # which counts under emulation (a hundred commands took a minute).
        links = "".join(f"link add f{i} type veth peer name f{i}p\nlink set f{i} up\n" for i in range(len(FEATURES)))
        proc = subprocess.run(["ip", "-n", ns, "-batch", "-"], input=links, capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise RuntimeError(f"cannot create the probe's veth links: {proc.stderr.strip()}")
        for i, (name, commands) in enumerate(FEATURES.items()):
            for command in commands:
                tool, *rest = command.format(dev=f"f{i}").split()
                proc = _run([tool, "-n", ns, *rest])
                if proc.returncode:
                    errors[name] = f"{command.format(dev=f'f{i}')}: {proc.stderr.strip()}"
                    break
            present[name] = name not in errors
    finally:
        _run(["ip", "netns", "del", ns])
    return {"kernel": platform.release(), "features": present, "errors": errors}


def probe() -> dict:
    """The features of the kernel these tests run on (in the guest: what the rig probed at boot)."""
    path = os.environ.get("GUEST_KERNEL_FEATURES")
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return probe_kernel()


def main() -> int:
    parser = argparse.ArgumentParser(description="Probe the running kernel's traffic-control features.")
    parser.add_argument("--output", help="write the JSON here (default: stdout)")
    args = parser.parse_args()
    found = probe_kernel()
    text = json.dumps(found, indent=1, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        have = [n for n, ok in found["features"].items() if ok]
        lacks = [n for n, ok in found["features"].items() if not ok]
        print(f"kernel {found['kernel']}: has {' '.join(have) or 'none'}; lacks {' '.join(lacks) or 'nothing'}",
              flush=True)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
