"""Flows: the conntrack table (what a router forwards) and live sockets via NETLINK_SOCK_DIAG."""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Optional, Union

from .base import Collector, register

NF_CONNTRACK = "/proc/net/nf_conntrack"
NF_CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
NF_CONNTRACK_ACCT = "/proc/sys/net/netfilter/nf_conntrack_acct"

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2
TCP_ESTABLISHED = 1
ALL_STATES = 0xFFFFFFFF
NLMSG_HDR = struct.Struct("=IHHII")
DIAG_REQ = struct.Struct("=BBBxI48x")
DIAG_MSG_HEAD = struct.Struct("=BBBB")
DIAG_MSG_LEN = 72
SOCKID = struct.Struct("!HH16s16s")
RTATTR = struct.Struct("=HH")
# struct tcp_info: eight u8 fields, then u32s; tcpi_rtt (microseconds) is the 16th u32.
TCPI_RTT_OFFSET = 8 + 15 * 4


def local_addresses() -> set[str]:
    """Every address assigned to this host (IPv4 from the FIB's LOCAL routes, IPv6 from if_inet6)."""
    addresses = set()
    try:
        with open("/proc/net/fib_trie") as f:
            last = None
            for line in f:
                text = line.strip()
                if text.startswith("|--"):
                    last = text[3:].strip()
                elif text.startswith("/32 host LOCAL") and last:
                    addresses.add(last)
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                addresses.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    except OSError:
        pass
    return addresses


def _conntrack_fields(line: str) -> tuple[str, list[dict]]:
    """Protocol name and the two tuples (original, reply) of one nf_conntrack line."""
    words = line.split()
    proto = words[2]
    tuples: list[dict] = []
    for word in words[4:]:
        key, eq, value = word.partition("=")
        if not eq:
            continue
        if key == "src" and (not tuples or "src" in tuples[-1]):
            tuples.append({})
        if tuples:
            tuples[-1].setdefault(key, value)
    return proto, tuples


def conntrack_packets_by_protocol() -> Union[dict, str]:
    """Packets per forwarded flow, {"flows": {key: (protocol, packets)}}, or why it cannot be read.

    A flow is forwarded when neither its initiator (original source) nor its
    responder (reply source, which is the real host after DNAT) is this host.
    """
    if not os.path.exists(NF_CONNTRACK):
        return "kernel has no conntrack table (/proc/net/nf_conntrack)"
    try:
        with open(NF_CONNTRACK_ACCT) as f:
            if f.read().strip() != "1":
                return "conntrack accounting is off (sysctl net.netfilter.nf_conntrack_acct=1 enables it)"
        with open(NF_CONNTRACK) as f:
            lines = f.readlines()
    except OSError as exc:
        return f"conntrack table unreadable: {exc.strerror}"
    local = local_addresses()
    flows = {}
    for line in lines:
        proto, tuples = _conntrack_fields(line)
        if len(tuples) != 2 or tuples[0].get("src") in local or tuples[1].get("src") in local:
            continue
        original = tuples[0]
        key = " ".join(str(original.get(k)) for k in ("src", "dst", "sport", "dport", "id", "type"))
        key = f"{proto} {key}"
        packets = int(tuples[0].get("packets", 0)) + int(tuples[1].get("packets", 0))
        flows[key] = [proto if proto in ("tcp", "udp", "icmp") else "other", packets]
    return {"flows": flows}


def _diag_dump(family: int, protocol: int, states: int, ext: int) -> list[bytes]:
    """One sock_diag dump: the payload (inet_diag_msg + attributes) of each socket."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        request = DIAG_REQ.pack(family, protocol, ext, states)
        nl.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(request), SOCK_DIAG_BY_FAMILY,
                               NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        messages = []
        while True:
            data = nl.recv(65536)
            offset = 0
            while offset + NLMSG_HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
                if length < NLMSG_HDR.size:
                    return messages
                if kind == NLMSG_DONE:
                    return messages
                if kind == NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", data, offset + NLMSG_HDR.size)[0]
                    raise OSError(errno, os.strerror(errno))
                messages.append(data[offset + NLMSG_HDR.size:offset + length])
                offset += (length + 3) & ~3


def _addresses(payload: bytes, family: int) -> tuple[str, str, int]:
    sport, dport, src, dst = SOCKID.unpack_from(payload, 4)
    size = 4 if family == socket.AF_INET else 16
    return (socket.inet_ntop(family, src[:size]), socket.inet_ntop(family, dst[:size]), dport)


def _tcp_rtt_us(payload: bytes) -> Optional[int]:
    offset = DIAG_MSG_LEN
    while offset + RTATTR.size <= len(payload):
        length, kind = RTATTR.unpack_from(payload, offset)
        if length < RTATTR.size:
            return None
        if kind == INET_DIAG_INFO and length - RTATTR.size >= TCPI_RTT_OFFSET + 4:
            return struct.unpack_from("=I", payload, offset + RTATTR.size + TCPI_RTT_OFFSET)[0]
        offset += (length + 3) & ~3
    return None


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def socket_flows() -> dict:
    """Established TCP connections and connected UDP sockets of this host, and TCP's own RTT estimates.

    Loopback sockets are left out: they say nothing about the network.
    """
    tcp = udp = 0
    rtts = []
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            for payload in _diag_dump(family, socket.IPPROTO_TCP, 1 << TCP_ESTABLISHED, 1 << (INET_DIAG_INFO - 1)):
                src, dst, _ = _addresses(payload, family)
                if _is_loopback(src) or _is_loopback(dst):
                    continue
                tcp += 1
                rtt = _tcp_rtt_us(payload)
                if rtt:
                    rtts.append(rtt / 1000.0)
            for payload in _diag_dump(family, socket.IPPROTO_UDP, ALL_STATES, 0):
                src, dst, dport = _addresses(payload, family)
                if dport and not (_is_loopback(src) or _is_loopback(dst)):
                    udp += 1
    except OSError as exc:
        return {"tcp": None, "udp": None, "tcp_rtt_ms": None,
                "source": f"sock_diag unavailable: {exc.strerror or exc}"}
    rtt = None
    if rtts:
        rtt = {"count": len(rtts), "mean": round(sum(rtts) / len(rtts), 3), "min": round(min(rtts), 3),
               "max": round(max(rtts), 3)}
    return {"tcp": tcp, "udp": udp, "tcp_rtt_ms": rtt, "source": "sock_diag"}


def flow_count() -> tuple[Optional[int], str]:
    """Flows through or on this host: conntrack's count when it tracks anything, else live sockets."""
    try:
        with open(NF_CONNTRACK_COUNT) as f:
            tracked = int(f.read())
        if tracked > 0:
            return tracked, "conntrack"
    except (OSError, ValueError):
        pass
    sockets = socket_flows()
    if sockets["tcp"] is None:
        return None, sockets["source"]
    return sockets["tcp"] + sockets["udp"], "sock_diag (no conntrack entries: counts this host's own sockets)"


def collect() -> dict:
    """How many flows (and from where), and this host's own sockets with TCP's RTT estimates."""
    count, source = flow_count()
    return {"flow_count": count, "flow_count_source": source, "sockets": socket_flows()}


COLLECTOR = register(Collector(
    name="flows", summary="flow count (conntrack, else sockets) and TCP RTTs of established connections",
    cost="/proc/sys/net/netfilter/nf_conntrack_count, and a sock_diag dump of every TCP and UDP socket "
         "(O(sockets))", collect=collect))
