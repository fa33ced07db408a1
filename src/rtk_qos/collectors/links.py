"""Links and routes from sysfs and procfs: what each interface is, how fast, which one routes out."""
from __future__ import annotations

import os
import socket
import struct
from dataclasses import asdict, dataclass
from typing import Optional

from .base import Collector, register

SYS_NET = "/sys/class/net"
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTF_UP = 0x1
RTF_GATEWAY = 0x2


@dataclass(frozen=True)
class LinkInfo:
    name: str
    ifindex: int
    operstate: str
    up: bool
    loopback: bool
    mac: Optional[str]
    kind: str
    speed_mbps: Optional[int]
    speed_reason: Optional[str]


@dataclass(frozen=True)
class Route:
    family: int
    gateway: str
    ifname: str
    metric: int


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _kind(base: str) -> str:
    uevent = _read(os.path.join(base, "uevent")) or ""
    for line in uevent.splitlines():
        if line.startswith("DEVTYPE="):
            return line.split("=", 1)[1]
    return "physical" if os.path.exists(os.path.join(base, "device")) else "virtual"


def _speed(base: str, kind: str, loopback: bool) -> tuple[Optional[int], Optional[str]]:
    """Link speed in Mbit/s, or None and why.

    Only links backed by hardware have a speed worth dividing by: veth reports a
    nominal 10000 and bridges report their fastest port, neither of which bounds
    the traffic, so virtual links are unknown on purpose.
    """
    if loopback:
        return None, "loopback has no link speed"
    if kind != "physical" and kind != "wlan":
        return None, f"{kind} link: no physical speed (a reported speed would be nominal)"
    text = _read(os.path.join(base, "speed"))
    if text is None:
        return None, "driver does not report a speed (link down or not supported)"
    try:
        speed = int(text)
    except ValueError:
        return None, f"unreadable speed {text!r}"
    if speed <= 0:
        return None, "driver reports an unknown speed"
    return speed, None


def link(name: str) -> Optional[LinkInfo]:
    base = os.path.join(SYS_NET, name)
    ifindex = _read(os.path.join(base, "ifindex"))
    if ifindex is None:
        return None
    flags = int(_read(os.path.join(base, "flags")) or "0", 16)
    loopback = bool(flags & IFF_LOOPBACK)
    kind = "loopback" if loopback else _kind(base)
    mac = _read(os.path.join(base, "address"))
    if mac in ("", "00:00:00:00:00:00"):
        mac = None
    speed, reason = _speed(base, kind, loopback)
    return LinkInfo(name=name, ifindex=int(ifindex), operstate=_read(os.path.join(base, "operstate")) or "unknown",
                    up=bool(flags & IFF_UP), loopback=loopback, mac=mac, kind=kind, speed_mbps=speed,
                    speed_reason=reason)


def list_links() -> list[LinkInfo]:
    try:
        names = sorted(os.listdir(SYS_NET))
    except OSError:
        return []
    return [info for info in map(link, names) if info is not None]


def default_routes() -> list[Route]:
    """Default routes of both families, lowest metric first."""
    routes = []
    for line in (_read("/proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        ifname, dest, gateway, flags, metric, mask = fields[0], fields[1], fields[2], int(fields[3], 16), int(fields[6]), fields[7]
        if dest == "00000000" and mask == "00000000" and flags & RTF_UP and flags & RTF_GATEWAY:
            routes.append(Route(4, socket.inet_ntoa(struct.pack("<I", int(gateway, 16))), ifname, metric))
    for line in (_read("/proc/net/ipv6_route") or "").splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, plen, gateway, metric, flags, ifname = fields[0], fields[1], fields[4], int(fields[5], 16), int(fields[8], 16), fields[9]
        if dest == "0" * 32 and plen == "00" and flags & RTF_UP and flags & RTF_GATEWAY and gateway != "0" * 32:
            routes.append(Route(6, socket.inet_ntop(socket.AF_INET6, bytes.fromhex(gateway)), ifname, metric))
    return sorted(routes, key=lambda r: (r.metric, r.family))


def default_gateway(family: int = 4) -> Optional[Route]:
    return next((r for r in default_routes() if r.family == family), None)


def primary_interface() -> Optional[LinkInfo]:
    """The interface of the best default route, else the first non-loopback link with a MAC."""
    for route in default_routes():
        info = link(route.ifname)
        if info is not None:
            return info
    return next((info for info in list_links() if not info.loopback and info.mac), None)


def active_interfaces(carried_bytes: dict[str, int]) -> list[str]:
    """Names of links that are up, not loopback, and have carried traffic, busiest first."""
    infos = {info.name: info for info in list_links()}
    active = [name for name, carried in carried_bytes.items()
              if carried > 0 and name in infos and infos[name].up and not infos[name].loopback
              and infos[name].operstate not in ("down", "lowerlayerdown", "notpresent")]
    return sorted(active, key=lambda name: -carried_bytes[name])


def collect() -> dict:
    """Every link (kind, state, speed or why unknown) and the default routes."""
    return {"links": [asdict(info) for info in list_links()],
            "default_routes": [asdict(route) for route in default_routes()]}


COLLECTOR = register(Collector(
    name="links", summary="links and routes: kind, state, MAC, speed; default routes",
    cost="a few small sysfs files per link, /proc/net/route and /proc/net/ipv6_route", collect=collect))
