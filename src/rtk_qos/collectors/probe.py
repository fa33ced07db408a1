"""ICMP echo probing with kernel receive timestamps and sequence accounting.

Sends are paced on an absolute schedule (start + k * interval) so processing time
never makes the rate drift. RTT is the kernel's receive timestamp (SO_TIMESTAMPNS)
minus the send time taken just before sendto(), both on CLOCK_REALTIME, so Python
scheduling delays on the receive side do not inflate it. Sequence numbers tell
loss, duplicates and reordering apart.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import links

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("=qq")
ECHO = struct.Struct("!BBHHH")
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"


class ProbeUnavailable(Exception):
    """No way to send echo requests from this process."""


@dataclass
class ProbeReport:
    address: str
    method: str
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    rtts_ms: list = field(default_factory=list)  # in arrival order
    seqs: list = field(default_factory=list)     # sequence of each rtt
    errors: list = field(default_factory=list)
    lost_seqs: list = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.lost_seqs)

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    @property
    def loss_bursts(self) -> list[int]:
        """Lengths of runs of consecutive lost probes."""
        runs, previous = [], None
        for seq in self.lost_seqs:
            if previous is not None and seq == previous + 1:
                runs[-1] += 1
            else:
                runs.append(1)
            previous = seq
        return runs

    @property
    def max_consecutive_loss(self) -> int:
        return max(self.loss_bursts, default=0)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _dgram_allowed() -> bool:
    try:
        with open(PING_GROUP_RANGE) as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        return False
    return any(low <= gid <= high for gid in {os.getegid(), *os.getgroups()})


def open_echo_socket(family: int) -> tuple[socket.socket, str]:
    """An ICMP socket: the unprivileged datagram kind where allowed, else raw (root)."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    attempts = [(socket.SOCK_DGRAM, "icmp-dgram")] if _dgram_allowed() else []
    attempts.append((socket.SOCK_RAW, "icmp-raw"))
    errors = []
    for kind, method in attempts:
        try:
            sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
        except OSError as exc:
            errors.append(f"{method}: {exc.strerror}")
            continue
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        return sock, method
    raise ProbeUnavailable("cannot open an ICMP socket (" + "; ".join(errors) +
                           "); ping_group_range excludes this group and the process is not root")


class EchoProber:
    def __init__(self, address: str, interval: float = 1.0, timeout: float = 2.0, payload_size: int = 56):
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.interval = interval
        self.timeout = timeout
        self.payload_size = max(payload_size, 0)
        self.ident = os.getpid() & 0xFFFF

    def _packet(self, seq: int) -> bytes:
        kind = ICMP_ECHO if self.family == socket.AF_INET else ICMP6_ECHO
        payload = bytes(self.payload_size)
        header = ECHO.pack(kind, 0, 0, self.ident, seq)
        if self.family == socket.AF_INET6:
            return header + payload  # the kernel computes ICMPv6 checksums
        return ECHO.pack(kind, 0, _checksum(header + payload), self.ident, seq) + payload

    def _parse(self, data: bytes, raw: bool) -> Optional[tuple[int, int]]:
        """(ident, seq) of an echo reply, or None for anything else."""
        if raw and self.family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < ECHO.size:
            return None
        kind, _code, _sum, ident, seq = ECHO.unpack_from(data)
        if kind != (ICMP_ECHOREPLY if self.family == socket.AF_INET else ICMP6_ECHOREPLY):
            return None
        return ident, seq

    def run(self, duration: float, stop: Optional[threading.Event] = None,
            on_reply: Optional[Callable[[int, float], None]] = None) -> ProbeReport:
        """Probe for `duration` seconds (or until `stop`), then wait out the last timeout."""
        sock, method = open_echo_socket(self.family)
        report = ProbeReport(self.address, method)
        raw = method.endswith("raw")
        sent_at: dict[int, int] = {}      # seq -> send time, ns
        received: set[int] = set()
        highest = -1
        start = time.monotonic()
        count = max(1, int(duration / self.interval + 1e-9))
        seq = 0
        last_send = start
        with sock:
            while True:
                now = time.monotonic()
                stopping = stop is not None and stop.is_set()
                if seq < count and not stopping and now >= start + seq * self.interval:
                    sent_at[seq] = time.time_ns()
                    try:
                        sock.sendto(self._packet(seq & 0xFFFF), (self.address, 0))
                        report.sent += 1
                    except OSError as exc:
                        del sent_at[seq]
                        report.errors.append(f"send {seq}: {exc.strerror}")
                    last_send = now
                    seq += 1
                    continue
                if (seq >= count or stopping) and (len(received) == len(sent_at)
                                                   or now >= last_send + self.timeout):
                    break
                next_event = start + seq * self.interval if seq < count and not stopping else now + 0.05
                ready, _, _ = select.select([sock], [], [], max(0.0, min(next_event - now, 0.05)))
                if not ready:
                    continue
                while True:
                    try:
                        data, ancillary, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
                    except BlockingIOError:
                        break
                    parsed = self._parse(data, raw)
                    if parsed is None or (raw and parsed[0] != self.ident) or peer[0] != self.address:
                        continue
                    arrival = next((TIMESPEC.unpack(d) for level, kind, d in ancillary
                                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
                    arrival_ns = arrival[0] * 1_000_000_000 + arrival[1] if arrival else time.time_ns()
                    # Map the 16-bit wire sequence back to the nearest sent sequence.
                    wire = parsed[1]
                    full = max((s for s in sent_at if s & 0xFFFF == wire), default=None)
                    if full is None:
                        continue
                    if full in received:
                        report.duplicates += 1
                        continue
                    rtt_ms = (arrival_ns - sent_at[full]) / 1e6
                    if rtt_ms > self.timeout * 1000:
                        continue  # too late: counted as lost
                    received.add(full)
                    if full < highest:
                        report.reordered += 1
                    highest = max(highest, full)
                    report.rtts_ms.append(rtt_ms)
                    report.seqs.append(full)
                    if on_reply:
                        on_reply(full, rtt_ms)
        report.received = len(received)
        report.lost_seqs = sorted(s for s in sent_at if s not in received)
        return report


def probe_gateway(duration: float, interval: float = 1.0, stop: Optional[threading.Event] = None
                  ) -> tuple[Optional[ProbeReport], Optional[str]]:
    """Echo-probe the IPv4 (else IPv6) default gateway; (None, reason) when there is none."""
    route = links.default_gateway(4) or links.default_gateway(6)
    if route is None:
        return None, "no default gateway to probe"
    address = route.gateway
    if route.family == 6 and address.startswith("fe80"):
        address = f"{address}%{route.ifname}"
    return EchoProber(address, interval=interval).run(duration, stop), None
