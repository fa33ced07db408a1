"""The cake actuator on a router kernel (the guest): adaptive shaping cuts a cake shaper's
bandwidth when netem adds real delay on the reflector's path, keeps cake's other settings, climbs back when
the delay is gone, goes to the minimum when the reflector falls silent, and puts the fixed rate
back when stopped.

The guest's own (disposable) namespace is the router, so the controller's prober and sampler
run in this process as in an agent; the reflector is a namespace behind a veth whose replies
leave through netem. Load: UDP datagrams to the reflector through the cake shaper.
"""
import json
import os
import socket
import subprocess
import threading
import time

import pytest
from pyroute2 import IPRoute

import netns
from rtk_qos.shaping.autorate import Autorate, CakeActuator
from rtk_qos.shaping.tcstate import TC_H_ROOT

pytestmark = pytest.mark.guest(needs=["cake", "netem"])
RATES = {"min_mbps": 1, "base_mbps": 8, "max_mbps": 10}


def _cake(ifname: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", ifname], capture_output=True, text=True, check=True).stdout


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_cake_bandwidth_follows_the_delay_netem_adds(tmp_path):
    reflector = netns.Netns(f"{netns.PREFIX}-{os.getpid()}-arefl")
    stop = threading.Event()
    try:
        subprocess.run(["ip", "link", "add", "ar0", "type", "veth", "peer", "name", "ar1", "netns", reflector.name],
                       check=True)
        subprocess.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "ar0"], check=True)
        subprocess.run(["ip", "link", "set", "ar0", "up"], check=True)
        reflector.run("ip", "addr", "add", "10.99.0.2/24", "dev", "ar1")
        reflector.run("ip", "link", "set", "ar1", "up")
        reflector.run("tc", "qdisc", "add", "dev", "ar1", "root", "netem", "delay", "2ms")
        subprocess.run(["tc", "qdisc", "add", "dev", "ar0", "root", "handle", "1:", "cake", "bandwidth", "8mbit",
                        "diffserv4", "rtt", "50ms"], check=True)

        def blast():  # about 4 Mbit/s of 1000-byte datagrams: load on the shaped direction
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            while not stop.is_set():
                for _ in range(25):
                    sock.sendto(b"x" * 1000, ("10.99.0.2", 9))
                time.sleep(0.05)
        threading.Thread(target=blast, daemon=True).start()
        events = []
        autorate = Autorate({"mode": "active", "upload": RATES, "active_reflectors": 1},
                            {"upload": CakeActuator("ar0", 0x10000, TC_H_ROOT, 8_000_000)}, str(tmp_path), IPRoute,
                            lambda kind, payload: events.append(payload), ["10.99.0.2"])
        autorate.start()
        try:
            time.sleep(3)  # baselines
            reflector.run("tc", "qdisc", "change", "dev", "ar1", "root", "netem", "delay", "60ms")
            assert _wait(lambda: any(d.get("reason") == "cut" for d in _decisions(tmp_path)), 15), \
                _decisions(tmp_path)
            cut = next(d for d in _decisions(tmp_path) if d.get("reason") == "cut")
            assert cut["new_mbps"] < RATES["base_mbps"] and cut["applied"]
            shown = _cake("ar0")
            assert "diffserv4" in shown and "rtt 50ms" in shown  # only the bandwidth changed
            # The delay gone, the rate climbs back; then the reflector falls silent: the minimum.
            reflector.run("tc", "qdisc", "change", "dev", "ar1", "root", "netem", "delay", "2ms")
            assert _wait(lambda: _decisions(tmp_path)[-1].get("new_mbps", 0) > 2 * RATES["min_mbps"], 15)
            reflector.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
            assert _wait(lambda: any(d.get("reason") == "stall" for d in _decisions(tmp_path)), 15)
            assert "bandwidth 1Mbit" in _cake("ar0")
        finally:
            autorate.stop(restore=True)
        assert "bandwidth 8Mbit" in _cake("ar0") and "diffserv4" in _cake("ar0")
        assert any(d.get("reason") == "cut" for e in events for d in e["decisions"])
    finally:
        stop.set()
        subprocess.run(["ip", "link", "del", "ar0"], capture_output=True)
        reflector.delete()


def _decisions(state_dir) -> list[dict]:
    path = state_dir / "autorate.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
