"""The bufferbloat topology of the shaping tests and bench, with real packets:

    lan (eth0) ── (lan1) router (wan0) ── (m_in) modem (m_out) ── (eth0) server

The modem is a bridge (as a cable or DSL modem is) whose egress toward the server is the slow
link with a deep buffer (tbf, 8 Mbit/s and 400 kB by default: 400 ms of queue). The server is
also the router's default gateway (the ISP's side), so the agent's gateway probe crosses the
modem's queue as it would at home. The router is where the agent shapes (its uplink wan0). Load: iperf3 uploads from lan to server; probes: a voip-like UDP
echo (chosen DSCP and port) and ping, from lan to server, timed on lan.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import netns

HERE = Path(__file__).resolve().parent
BOTTLENECK_BPS = 8_000_000
BUFFER_BYTES = 400_000

# The server side of the UDP probe: echoes every datagram to its sender.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

# The client side: 160-byte datagrams (a 20 ms G.711 frame) every interval, with a TOS byte,
# from a fixed source port; prints the round trips in ms (lost ones are left out) as JSON.
PROBE = """
import json, select, socket, struct, sys, time
host, port, tos, count, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
s.bind(("0.0.0.0", port))
sent, rtts = {}, []
start = time.monotonic()
for seq in range(count):
    due = start + seq * interval
    while True:
        wait = due - time.monotonic()
        ready, _, _ = select.select([s], [], [], max(0.0, wait))
        if ready:
            data, _ = s.recvfrom(2048)
            n = struct.unpack("!I", data[:4])[0]
            if n in sent:
                rtts.append((time.monotonic() - sent.pop(n)) * 1000)
        elif wait <= 0:
            break
    sent[seq] = time.monotonic()
    s.sendto(struct.pack("!I", seq) + b"v" * 156, (host, port))
end = time.monotonic() + 1.0
while sent and time.monotonic() < end:
    ready, _, _ = select.select([s], [], [], 0.05)
    if ready:
        data, _ = s.recvfrom(2048)
        n = struct.unpack("!I", data[:4])[0]
        if n in sent:
            rtts.append((time.monotonic() - sent.pop(n)) * 1000)
print(json.dumps({"rtts": rtts, "lost": len(sent), "sent": count}))
"""


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2), "n": len(ordered)}


@dataclass
class Rig:
    lan: netns.Netns
    router: netns.Netns
    modem: netns.Netns
    server: netns.Netns
    lan_addr: str
    router_lan_addr: str
    router_wan_addr: str
    modem_addr: object  # None: the modem is a bridge
    server_addr: str
    uplink: str = "wan0"

    def delete(self) -> None:
        for ns in (self.lan, self.router, self.modem, self.server):
            ns.delete()

    def offloads(self, on: bool) -> None:
        """Segmentation and receive offloads of every veth on the path, on or off."""
        state = "on" if on else "off"
        for ns, ifname in ((self.lan, "eth0"), (self.router, "lan1"), (self.router, "wan0"),
                           (self.modem, "m_in"), (self.modem, "m_out"), (self.server, "eth0")):
            ns.run("ethtool", "-K", ifname, "tso", state, "gso", state, "gro", state)

    # ---- measurements --------------------------------------------------------------------------

    def start_servers(self, echo_ports=(5060, 40000)) -> list[subprocess.Popen]:
        procs = [self.server.popen("iperf3", "-s", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        for port in echo_ports:
            proc = self.server.popen(sys.executable, "-c", ECHO, str(port), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
            proc.stdout.readline()
            procs.append(proc)
        time.sleep(0.3)
        return procs

    def udp_probe(self, port: int, tos: int, seconds: float, interval: float = 0.02) -> subprocess.Popen:
        return self.lan.popen(sys.executable, "-c", PROBE, self.server_addr, str(port), str(tos),
                              str(int(seconds / interval)), str(interval), stdout=subprocess.PIPE, text=True)

    def ping(self, seconds: float, interval: float = 0.1) -> subprocess.Popen:
        return self.lan.popen("ping", "-n", "-i", str(interval), "-c", str(int(seconds / interval)),
                              "-W", "2", self.server_addr, stdout=subprocess.PIPE, text=True)

    def upload(self, seconds: float, cc: str = "cubic", tos: int = 0, local: bool = False,
               download: bool = False) -> subprocess.Popen:
        """iperf3 from the LAN host through the router, or from the router itself (`local`: its
        TCP stack hands 64 kB GSO super-packets to the uplink's queue when offloads are on);
        `download`: the server sends (iperf3 -R)."""
        return (self.router if local else self.lan).popen(
            "iperf3", "-c", self.server_addr, "-t", str(seconds), "-C", cc, "-J", "-S", str(tos), "--omit", "2",
            *(["-R"] if download else []), stdout=subprocess.PIPE, text=True)

    def measure(self, seconds: float = 12.0, load: bool = True, cc: str = "cubic",
                voip=(5060, 0xB8), bulk=(40000, 0), local: bool = False, download: bool = False) -> dict:
        """Latency of the voip-like probe, of a probe in the load's class, and of ping, with or
        without a bulk upload; goodput as a fraction of the bottleneck."""
        upload = self.upload(seconds + 2, cc, local=local, download=download) if load else None
        if load:
            time.sleep(3)  # the queue fills within a second at 8 Mbit/s; 3 s is past slow start
        voip_probe = self.udp_probe(voip[0], voip[1], seconds)
        bulk_probe = self.udp_probe(bulk[0], bulk[1], seconds)
        ping = self.ping(seconds)
        results = {}
        for name, proc in (("voip", voip_probe), ("bulk", bulk_probe)):
            out, _ = proc.communicate(timeout=seconds + 30)
            data = json.loads(out)
            results[name] = {**percentiles(data["rtts"]), "lost": data["lost"]}
        out, _ = ping.communicate(timeout=seconds + 30)
        results["ping"] = _ping_summary(out)
        if upload is not None:
            out, _ = upload.communicate(timeout=seconds + 60)
            report = json.loads(out)
            received = report["end"]["sum_received"]["bits_per_second"]
            results["goodput_bps"] = received
            results["throughput_fraction"] = round(received / BOTTLENECK_BPS, 3)
        return results


def _ping_summary(text: str) -> dict:
    # ping's summary line has no percentiles: take each reply's "time=X ms".
    rtts = [float(part.split("=")[1]) for line in text.splitlines() for part in line.split()
            if part.startswith("time=")]
    return percentiles(rtts)


def make_rig(rate_bps: int = BOTTLENECK_BPS, buffer_bytes: int = BUFFER_BYTES, download: bool = False) -> Rig:
    """The topology; `download` puts the same slow deep queue on the modem's side toward the
    router too (a download then bloats it)."""
    base, octet = netns._subnet()
    names = [base + suffix for suffix in ("lan", "rtr", "mdm", "srv")]
    spaces = []
    try:
        for name in names:
            spaces.append(netns.Netns(name))
        lan, router, modem, server = spaces
        rig = Rig(lan, router, modem, server, f"10.80.{octet}.2", f"10.80.{octet}.1", f"10.81.{octet}.1",
                  None, f"10.81.{octet}.2")
        netns._link(lan, router, "eth0", "lan1", rig.lan_addr, rig.router_lan_addr)
        for near, near_if, far_if in ((router, "wan0", "m_in"), (server, "eth0", "m_out")):
            subprocess.run(["ip", "link", "add", near_if, "netns", near.name, "type", "veth", "peer", "name",
                            far_if, "netns", modem.name], check=True)
            near.run("ip", "link", "set", near_if, "up")
        router.run("ip", "addr", "add", f"{rig.router_wan_addr}/24", "dev", "wan0")
        server.run("ip", "addr", "add", f"{rig.server_addr}/24", "dev", "eth0")
        modem.run("ip", "link", "add", "br0", "type", "bridge")
        for ifname in ("m_in", "m_out"):
            modem.run("ip", "link", "set", ifname, "master", "br0")
            modem.run("ip", "link", "set", ifname, "up")
        modem.run("ip", "link", "set", "br0", "up")
        lan.run("ip", "route", "add", "default", "via", rig.router_lan_addr)
        router.run("ip", "route", "add", "default", "via", rig.server_addr)
        server.run("ip", "route", "add", f"10.80.{octet}.0/24", "via", rig.router_wan_addr)
        router.sysctl("net.ipv4.ip_forward", "1")
        # The modem's slow link: tbf drains at the line rate; its deep buffer is the bloat.
        for ifname in ("m_out", "m_in") if download else ("m_out",):
            modem.run("tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate", str(rate_bps),
                      "burst", "5000", "limit", str(buffer_bytes))
        return rig
    except Exception:
        for ns in spaces:
            ns.delete()
        raise
