"""Test hosts: network namespaces joined by veth pairs, built and torn down by the tests.

Names carry the test process id so parallel or crashed runs never collide; a
namespace left behind by a dead process is removed the next time.
"""
from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass

PREFIX = "rtkq"
_counter = itertools.count(1)


class Netns:
    def __init__(self, name: str):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60, input: str | None = None):
        proc = subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {self.name} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")
        return proc

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*argv), **kwargs)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def remove_stale() -> None:
    """Delete namespaces of test processes that no longer exist."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit():
            if not os.path.exists(f"/proc/{parts[1]}"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _link(left: Netns, right: Netns, left_if: str, right_if: str, left_addr: str, right_addr: str):
    subprocess.run(["ip", "link", "add", left_if, "netns", left.name, "type", "veth", "peer", "name",
                    right_if, "netns", right.name], check=True)
    for ns, ifname, addr in ((left, left_if, left_addr), (right, right_if, right_addr)):
        ns.run("ip", "addr", "add", f"{addr}/24", "dev", ifname)
        ns.run("ip", "link", "set", ifname, "up")


@dataclass
class Pair:
    """Host A whose default gateway is host B, over one veth link."""
    a: Netns
    b: Netns
    a_if: str
    b_if: str
    a_addr: str
    b_addr: str

    def delete(self) -> None:
        self.a.delete()
        self.b.delete()


@dataclass
class Chain:
    """A - B - C: B routes between A's and C's subnets, as a home router does."""
    a: Netns
    b: Netns
    c: Netns
    a_if: str
    b_lan_if: str
    b_wan_if: str
    c_if: str
    a_addr: str
    b_lan_addr: str
    b_wan_addr: str
    c_addr: str

    def delete(self) -> None:
        for ns in (self.a, self.b, self.c):
            ns.delete()


def _subnet() -> tuple[str, int]:
    n = next(_counter)
    return f"{PREFIX}-{os.getpid()}-{n}", (os.getpid() * 7 + n) % 250 + 1


def make_pair() -> Pair:
    base, octet = _subnet()
    a, b = Netns(base + "a"), Netns(base + "b")
    try:
        pair = Pair(a, b, "veth-a", "veth-b", f"10.77.{octet}.1", f"10.77.{octet}.2")
        _link(a, b, pair.a_if, pair.b_if, pair.a_addr, pair.b_addr)
        a.run("ip", "route", "add", "default", "via", pair.b_addr)
        return pair
    except Exception:
        a.delete()
        b.delete()
        raise


def make_chain() -> Chain:
    base, octet = _subnet()
    a, b, c = Netns(base + "a"), Netns(base + "b"), Netns(base + "c")
    try:
        chain = Chain(a, b, c, "eth0", "lan1", "wan0", "eth0", f"10.78.{octet}.2", f"10.78.{octet}.1",
                      f"10.79.{octet}.1", f"10.79.{octet}.2")
        _link(a, b, chain.a_if, chain.b_lan_if, chain.a_addr, chain.b_lan_addr)
        _link(b, c, chain.b_wan_if, chain.c_if, chain.b_wan_addr, chain.c_addr)
        a.run("ip", "route", "add", "default", "via", chain.b_lan_addr)
        c.run("ip", "route", "add", "default", "via", chain.b_wan_addr)
        b.sysctl("net.ipv4.ip_forward", "1")
        return chain
    except Exception:
        for ns in (a, b, c):
            ns.delete()
        raise
