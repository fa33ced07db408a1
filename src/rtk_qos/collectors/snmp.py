"""Kernel protocol counters (/proc/net/snmp, snmp6, netstat) and what their deltas tell.

All counters are per network namespace and count every packet the stack
handled, so a delta over a run is exact for the host, with no sampling.
"""
from __future__ import annotations

from typing import Optional

from . import flows
from .base import Collector, register

SNMP_FILES = ("/proc/net/snmp", "/proc/net/netstat")
SNMP6_FILE = "/proc/net/snmp6"

LOCAL_TCP = ("Tcp.InSegs", "Tcp.OutSegs")  # the Tcp table counts IPv6 TCP too
LOCAL_UDP = ("Udp.InDatagrams", "Udp.NoPorts", "Udp.InErrors", "Udp.OutDatagrams",
             "Udp6InDatagrams", "Udp6NoPorts", "Udp6InErrors", "Udp6OutDatagrams")
LOCAL_ICMP = ("Icmp.InMsgs", "Icmp.OutMsgs", "Icmp6InMsgs", "Icmp6OutMsgs")
LOCAL_IP = ("Ip.InDelivers", "Ip.OutRequests", "Ip6InDelivers", "Ip6OutRequests")
FORWARDED = ("Ip.ForwDatagrams", "Ip6OutForwDatagrams")
PROTOCOLS = ("tcp", "udp", "icmp", "other")


def _parse_pairs(text: str, out: dict) -> None:
    """`Proto: names...` followed by `Proto: values...` line pairs."""
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2]):
        proto, names = header.split(":", 1)
        _, numbers = values.split(":", 1)
        for name, number in zip(names.split(), numbers.split()):
            out[f"{proto}.{name}"] = int(number)


def read_snmp() -> dict[str, int]:
    counters: dict[str, int] = {}
    for path in SNMP_FILES:
        try:
            with open(path) as f:
                _parse_pairs(f.read(), counters)
        except OSError:
            pass
    try:
        with open(SNMP6_FILE) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if value.strip():
                    counters[name] = int(value)
    except OSError:
        pass  # kernel without IPv6
    counters["_conntrack"] = flows.conntrack_packets_by_protocol()
    return counters


def _delta(before: dict, after: dict, keys) -> int:
    # A counter that went backwards (namespace re-created) contributes nothing.
    return sum(max(0, after.get(k, 0) - before.get(k, 0)) for k in keys)


def _conntrack_delta(before, after) -> Optional[dict]:
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    out = dict.fromkeys(PROTOCOLS, 0)
    for key, (proto, packets) in after["flows"].items():
        prev = before["flows"].get(key)
        out[proto] += packets - prev[1] if prev and prev[1] <= packets else packets
    return out


def protocol_distribution(before: dict, after: dict) -> dict:
    """Share of packets per protocol during the run.

    Local traffic comes from the stack's own counters. Forwarded traffic (a
    router's real load) is counted by Ip.ForwDatagrams and split by protocol
    from conntrack's per-flow accounting when the kernel tracks and accounts
    flows; otherwise it is reported as a total that could not be split.
    """
    local = {
        "tcp": _delta(before, after, LOCAL_TCP),
        "udp": _delta(before, after, LOCAL_UDP),
        "icmp": _delta(before, after, LOCAL_ICMP),
    }
    local_ip = _delta(before, after, LOCAL_IP)
    local["other"] = max(0, local_ip - sum(local.values()))
    forwarded_total = _delta(before, after, FORWARDED)
    packets = dict(local)
    out: dict = {"source": "kernel SNMP counters (/proc/net/snmp, snmp6)"}
    unavailable = {}
    forwarded_split = None
    if forwarded_total:
        ct_before, ct_after = before.get("_conntrack"), after.get("_conntrack")
        forwarded_split = _conntrack_delta(ct_before, ct_after)
        if forwarded_split is not None and sum(forwarded_split.values()):
            for proto in PROTOCOLS:
                packets[proto] += forwarded_split[proto]
            out["source"] += " + conntrack flow accounting for forwarded packets"
        else:
            reason = (ct_after if isinstance(ct_after, str) else
                      "conntrack accounted no forwarded packets (flows ended or are untracked)")
            unavailable["forwarded_split"] = reason
            forwarded_split = None
    total = sum(packets.values())
    out["packets"] = {**packets, "total": total}
    out["local_packets"] = sum(local.values())
    out["forwarded_packets"] = forwarded_total
    out["forwarded_by_protocol"] = forwarded_split
    if total:
        for proto in PROTOCOLS:
            out[proto] = round(100.0 * packets[proto] / total, 2)
    else:
        for proto in PROTOCOLS:
            out[proto] = None
        unavailable["percent"] = "no IP packets were sent, received or forwarded during the run"
    if unavailable:
        out["unavailable"] = unavailable
    return out


def tcp_quality(before: dict, after: dict) -> dict:
    """TCP retransmission and out-of-order queueing over the run, from the kernel's counters."""
    out_segs = _delta(before, after, ("Tcp.OutSegs",))
    in_segs = _delta(before, after, ("Tcp.InSegs",))
    retrans = _delta(before, after, ("Tcp.RetransSegs",))
    ofo = _delta(before, after, ("TcpExt.TCPOFOQueue",))
    out: dict = {"out_segments": out_segs, "in_segments": in_segs, "retransmitted_segments": retrans,
                 "out_of_order_queued": ofo}
    unavailable = {}
    if out_segs:
        out["retransmit_percent"] = round(100.0 * retrans / out_segs, 3)
    else:
        out["retransmit_percent"] = None
        unavailable["retransmit_percent"] = "this host sent no TCP segments during the run"
    if "TcpExt.TCPOFOQueue" not in after:
        out["out_of_order_percent"] = None
        unavailable["out_of_order_percent"] = "kernel does not export TcpExt.TCPOFOQueue"
    elif in_segs:
        out["out_of_order_percent"] = round(100.0 * ofo / in_segs, 3)
    else:
        out["out_of_order_percent"] = None
        unavailable["out_of_order_percent"] = "this host received no TCP segments during the run"
    if unavailable:
        out["unavailable"] = unavailable
    return out


def collect() -> dict:
    """The kernel's protocol counters (cumulative since boot) and conntrack's per-protocol packets."""
    counters = read_snmp()
    conntrack = counters.pop("_conntrack")
    return {"counters": counters, "conntrack_packets": conntrack}


COLLECTOR = register(Collector(
    name="snmp", summary="protocol counters: IP, TCP, UDP, ICMP (v4 and v6), conntrack packets per protocol",
    cost="/proc/net/snmp, /proc/net/netstat, /proc/net/snmp6; with conntrack accounting, /proc/net/nf_conntrack "
         "(one line per tracked flow)", collect=collect))
