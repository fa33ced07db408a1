"""Active probes: ICMP echo, with TCP-connect and UDP fallbacks, many hosts in one event loop.

Sends are paced on an absolute schedule (start + k * interval, hosts staggered
across the interval) so processing time never makes the rate drift and no host
waits for another. ICMP and UDP round trips use the kernel's receive timestamp
(SO_TIMESTAMPNS) minus the time taken just before sendto(), both CLOCK_REALTIME,
so Python's scheduling delay on the receive side is not counted. TCP connect
completion has no kernel timestamp: its RTT is taken when the event loop sees
the socket writable (or refused), and the report says so.

A host that answers no ICMP echo within its first probes is tried with TCP
connect (a SYN-ACK or a RST both prove a live host), then UDP to the echo port
(an echo or an ICMP port-unreachable both answer); probes spent on methods that
got no answer are not counted as loss of the method finally used.

Every Prober has its own ICMP echo identifier and a random token at the start of
its payload: raw ICMP sockets see every echo reply the host receives, so two
probers in one process (a command's and the agent's) or in two processes tell
their replies apart by both. Deadlines (timeouts, pacing) run on the monotonic
clock, so a wall-clock step never expires a probe early or late; only the RTT
itself is a difference of two realtime stamps, as the kernel's receive stamp is.
"""
from __future__ import annotations

import bisect
import errno
import heapq
import math
from array import array
from collections import deque
import os
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import links
from .base import Collector, register

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("=qq")
ECHO = struct.Struct("!BBHHH")
UDP_PROBE = struct.Struct("!4sIQ")  # magic, sequence, send time (ns)
UDP_MAGIC = b"rtkq"
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
TCP_PORT = 80
UDP_ECHO_PORT = 7
DISCOVERY_PROBES = 3  # per method, before falling back to the next one
METHODS = ("icmp", "tcp", "udp")
_NS = 1_000_000_000
TOKEN_BYTES = 8  # random bytes at the start of every ICMP payload of one prober


class _Identifiers:
    """ICMP echo identifiers in use in this process: each running prober holds its own."""

    def __init__(self):
        self._lock = threading.Lock()
        self._used: set[int] = set()
        self._random = random.SystemRandom()

    def take(self) -> int:
        with self._lock:
            if len(self._used) >= 0x10000:
                raise ProbeUnavailable("every ICMP echo identifier is in use by this process")
            while True:
                ident = self._random.getrandbits(16)
                if ident not in self._used:
                    self._used.add(ident)
                    return ident

    def give_back(self, ident: int) -> None:
        with self._lock:
            self._used.discard(ident)


_identifiers = _Identifiers()


class ProbeUnavailable(Exception):
    """No way to send echo requests from this process."""


@dataclass
class ProbeReport:
    """What one host answered, for the method finally used."""
    address: str
    method: str
    timestamps: str = "kernel"  # kernel receive timestamps, or "user" (TCP connect)
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    # Compact arrays: an hour at 10 probes/s is 36000 replies per host.
    rtts_ms: array = field(default_factory=lambda: array("d"))   # in arrival order
    seqs: array = field(default_factory=lambda: array("q"))      # sequence of each rtt
    arrivals: array = field(default_factory=lambda: array("d"))  # monotonic seconds of each reply
    errors: list = field(default_factory=list)
    lost_seqs: list = field(default_factory=list)
    tried: list = field(default_factory=list)    # methods that got no answer during discovery

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


def _word_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _checksum(words: int) -> int:
    """Internet checksum from a sum of 16-bit words."""
    total = (words >> 16) + (words & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _dgram_allowed() -> bool:
    try:
        with open(PING_GROUP_RANGE) as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        return False
    return any(low <= gid <= high for gid in {os.getegid(), *os.getgroups()})


def _request_kernel_timestamps(sock: socket.socket) -> None:
    """Ask for receive timestamps; where the kernel (or qemu-user) refuses the option, replies
    are stamped when read (`_kernel_time_ns` falls back), a little later but still measured."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:
            raise


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
        _request_kernel_timestamps(sock)
        sock.setblocking(False)
        return sock, method
    raise ProbeUnavailable("cannot open an ICMP socket (" + "; ".join(errors) +
                           "); ping_group_range excludes this group and the process is not root")


def _queued_errno(ancillary) -> Optional[int]:
    """ee_errno of the struct sock_extended_err an error-queue message carries."""
    for level, kind, data in ancillary:
        if ((level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR))
                and len(data) >= 4):
            return struct.unpack_from("=I", data)[0]
    return None


def _kernel_time_ns(ancillary) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = TIMESPEC.unpack(data)
            return sec * _NS + nsec
    return time.time_ns()


class _Host:
    """Per-host probing state: schedule, outstanding probes and what came back."""

    def __init__(self, address: str, offset: float, icmp_method: str):
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.offset = offset
        self.icmp_method = icmp_method
        self.method_index = 0
        self.method_probes = 0  # probes sent with the current method
        self.settled = False    # a method answered, or every method was tried
        self.seq = 0
        self.pending: dict[int, int] = {}  # seq -> send time (ns, realtime)
        self.changes = [(0, 0)]            # (first seq, method index): methods change rarely
        self.answered = bytearray()        # one flag per seq sent
        self.highest = -1
        self.report = ProbeReport(address, icmp_method)
        self.udp: Optional[socket.socket] = None
        self.tcp: dict[int, socket.socket] = {}  # seq -> connecting socket

    @property
    def method(self) -> str:
        return METHODS[self.method_index]

    def method_of(self, seq: int) -> int:
        return next(index for first, index in reversed(self.changes) if first <= seq)

    def was_answered(self, seq: int) -> bool:
        return seq < len(self.answered) and self.answered[seq] == 1


class Prober:
    """Probes every host at `interval` seconds for `duration`, concurrently, in one thread."""

    def __init__(self, addresses: list[str], interval: float = 1.0, timeout: float = 2.0, payload_size: int = 56,
                 tcp_port: int = TCP_PORT, udp_port: int = UDP_ECHO_PORT, fallback: bool = True):
        if not addresses:
            raise ValueError("no address to probe")
        self.interval = interval
        self.timeout = timeout
        size = max(payload_size, 0)
        self.token = os.urandom(min(TOKEN_BYTES, size))
        self.payload = self.token + bytes(size - len(self.token))
        self._payload_words = _word_sum(self.payload)  # the payload never changes: sum it once
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.fallback = fallback
        self.ident: Optional[int] = None  # taken for the duration of run()
        self.addresses = list(dict.fromkeys(addresses))
        self.start: Optional[float] = None
        self._by_address: dict[str, _Host] = {}

    def run(self, duration: float, stop: Optional[threading.Event] = None,
            on_reply: Optional[Callable[[str, int, float], None]] = None) -> dict[str, ProbeReport]:
        """Probe for `duration` seconds (or until `stop`), then wait for the probes still unanswered
        (each at most its timeout)."""
        self.ident = _identifiers.take()
        self._selector = selectors.DefaultSelector()
        self._icmp: dict[int, tuple[socket.socket, str]] = {}
        try:
            for family in {socket.AF_INET6 if ":" in a else socket.AF_INET for a in self.addresses}:
                sock, method = open_echo_socket(family)
                self._icmp[family] = (sock, method)
                self._selector.register(sock, selectors.EVENT_READ, ("icmp", family))
        except ProbeUnavailable:
            self._close()
            raise
        n = len(self.addresses)
        hosts = [_Host(a, self.interval * i / n, self._icmp[socket.AF_INET6 if ":" in a else socket.AF_INET][1])
                 for i, a in enumerate(self.addresses)]
        self._by_address = {h.address: h for h in hosts}
        self._on_reply = on_reply
        count = max(1, int(duration / self.interval + 1e-9))
        start = self.start = time.monotonic()
        try:
            self._loop(hosts, start, count, stop)
        finally:
            self._close()
        return {h.address: self._finish(h) for h in hosts}

    def icmp_method(self, address: str) -> Optional[str]:
        """The ICMP socket kind (icmp-dgram, icmp-raw) probing `address`, once run() has opened it."""
        icmp = getattr(self, "_icmp", {}).get(socket.AF_INET6 if ":" in address else socket.AF_INET)
        return icmp[1] if icmp else None

    def sequences_used(self, address: str) -> int:
        """How many sequence numbers the last run() gave `address`."""
        host = self._by_address.get(address)
        return host.seq if host else 0

    def _close(self) -> None:
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()
        _identifiers.give_back(self.ident)

    def live_loss(self, address: str, window_s: float) -> Optional[float]:
        """Percent of the probes resolved (answered or timed out) in the last `window_s` seconds
        that were lost; None while the host's method is still being found or nothing resolved.
        Safe to call from another thread while run() is going."""
        host = self._by_address.get(address)
        if host is None or self.start is None or not host.settled:
            return None
        resolved_until = time.monotonic() - self.timeout - self.start - host.offset
        newest = min(math.floor(resolved_until / self.interval), host.seq - 1)
        oldest = max(host.changes[-1][0], math.ceil((resolved_until - window_s) / self.interval))
        if newest < oldest:
            return None
        lost = host.report.lost_seqs
        count = bisect.bisect_right(lost, newest) - bisect.bisect_left(lost, oldest)
        return 100.0 * count / (newest - oldest + 1)

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self, hosts: list[_Host], start: float, count: int, stop) -> None:
        # Sends come off a heap by due time; expiries off a queue in send order (a probe's
        # deadline is its send time + timeout, so the queue is already sorted): each event
        # costs O(log hosts), not a pass over every host.
        due = [(start + h.offset, i) for i, h in enumerate(hosts)]
        heapq.heapify(due)
        self._expiries: deque = deque()
        while True:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                due.clear()
            while due and due[0][0] <= now:
                _, i = heapq.heappop(due)
                host = hosts[i]
                self._send(host)
                if host.seq < count:
                    heapq.heappush(due, (start + host.offset + host.seq * self.interval, i))
            if self._expiries and self._expiries[0][0] <= now:
                # Replies already queued (this thread was late: a loaded CPU) are answers, not
                # losses: read them before expiring anything.
                self._dispatch(0.0)
            while self._expiries and self._expiries[0][0] <= now:
                _, host, seq = self._expiries.popleft()
                if seq in host.pending:
                    self._expire(host, seq)
            # An answered probe leaves its expiry behind: dropped here, so the last answer ends
            # the run instead of its probe's timeout.
            while self._expiries and self._expiries[0][2] not in self._expiries[0][1].pending:
                self._expiries.popleft()
            if not due and not self._expiries:
                return
            wake = now + 1.0
            if due:
                wake = min(wake, due[0][0])
            if self._expiries:
                wake = min(wake, self._expiries[0][0])
            self._dispatch(max(0.0, wake - time.monotonic()))

    def _dispatch(self, timeout: float) -> None:
        """Handle what is ready on any socket, waiting up to `timeout` seconds for something."""
        for key, _events in self._selector.select(timeout):
            kind = key.data[0]
            if kind == "icmp":
                self._read_icmp(key.fileobj)
            elif kind == "udp":
                self._read_udp(key.data[1], key.fileobj)
            else:
                self._tcp_done(key.fileobj, *key.data[1:])

    def _send(self, host: _Host) -> None:
        seq = host.seq
        host.seq += 1
        method = host.method
        host.answered.append(0)
        host.method_probes += 1
        try:
            if method == "icmp":
                sock = self._icmp[host.family][0]
                kind = ICMP_ECHO if host.family == socket.AF_INET else ICMP6_ECHO
                checksum = 0  # the kernel sums ICMPv6 itself
                if host.family == socket.AF_INET:
                    checksum = _checksum((kind << 8) + self.ident + (seq & 0xFFFF) + self._payload_words)
                header = ECHO.pack(kind, 0, checksum, self.ident, seq & 0xFFFF)
                packet = header + self.payload
                # Stamped after the packet is built, right before the syscall: the RTT then
                # holds nothing of Python's own work but the call itself.
                host.pending[seq] = time.time_ns()
                sock.sendto(packet, (host.address, 0))
            elif method == "tcp":
                sock = socket.socket(host.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
                # Close with RST, not FIN: no TIME_WAIT left behind per probe.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                host.pending[seq] = time.time_ns()
                rc = sock.connect_ex((host.address, self.tcp_port))
                if rc not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise OSError(rc, os.strerror(rc))
                host.tcp[seq] = sock
                self._selector.register(sock, selectors.EVENT_WRITE, ("tcp", host, seq))
            else:
                if host.udp is None:
                    host.udp = socket.socket(host.family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
                    _request_kernel_timestamps(host.udp)
                    # ICMP errors (port unreachable) come back on the error queue with the
                    # probe they answer, so each is matched to its own sequence number.
                    if host.family == socket.AF_INET:
                        host.udp.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                    else:
                        host.udp.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                    host.udp.connect((host.address, self.udp_port))
                    self._selector.register(host.udp, selectors.EVENT_READ, ("udp", host))
                send_ns = time.time_ns()
                packet = UDP_PROBE.pack(UDP_MAGIC, seq, send_ns) + self.payload
                host.pending[seq] = send_ns
                host.udp.send(packet)
            host.report.sent += 1
            self._expiries.append((time.monotonic() + self.timeout, host, seq))
        except OSError as exc:
            host.pending.pop(seq, None)
            host.report.errors.append(f"{method} probe {seq}: {exc.strerror or exc}")
            self._maybe_fall_back(host)

    def _answer(self, host: _Host, seq: int, arrival_ns: int) -> None:
        send_ns = host.pending.get(seq)
        if send_ns is None:
            if host.was_answered(seq):
                host.report.duplicates += 1
            return  # a late answer to a probe already counted lost, or not ours
        rtt_ms = (arrival_ns - send_ns) / 1e6
        if rtt_ms > self.timeout * 1000:
            return  # arrived after its deadline (read late): lost, as if read in time
        del host.pending[seq]
        host.answered[seq] = 1
        if host.method_of(seq) != host.method_index:
            return  # an answer to a discovery probe of a method since abandoned
        host.settled = True
        if seq < host.highest:
            host.report.reordered += 1
        host.highest = max(host.highest, seq)
        host.report.rtts_ms.append(rtt_ms)
        host.report.seqs.append(seq)
        host.report.arrivals.append(time.monotonic())
        if self._on_reply:
            self._on_reply(host.address, seq, rtt_ms)

    def _read_icmp(self, sock: socket.socket) -> None:
        raw = sock.type == socket.SOCK_RAW
        while True:
            try:
                data, ancillary, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket: not a reply
            family = sock.family
            if raw and family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < ECHO.size:
                continue
            kind, _code, _sum, ident, wire_seq = ECHO.unpack_from(data)
            if kind != (ICMP_ECHOREPLY if family == socket.AF_INET else ICMP6_ECHOREPLY):
                continue
            if raw and ident != self.ident:
                continue  # another prober's or another process's ping
            if data[ECHO.size:ECHO.size + len(self.token)] != self.token:
                continue  # same identifier by chance, not our payload
            host = self._by_address.get(peer[0].split("%")[0]) or self._by_address.get(peer[0])
            if host is None:
                continue
            seq = self._unwrap(host, wire_seq)
            if seq is not None:
                self._answer(host, seq, _kernel_time_ns(ancillary))

    @staticmethod
    def _unwrap(host: _Host, wire_seq: int) -> Optional[int]:
        """The full sequence number whose low 16 bits came back (the newest such probe)."""
        candidates = [s for s in host.pending if s & 0xFFFF == wire_seq]
        if candidates:
            return max(candidates)
        # Not in flight: a duplicate of the newest answered probe with these low bits, if any.
        newest = wire_seq + ((len(host.answered) - 1 - wire_seq) // 0x10000) * 0x10000
        return newest if 0 <= newest < len(host.answered) and host.was_answered(newest) else None

    def _read_udp(self, host: _Host, sock: socket.socket) -> None:
        for flags in (socket.MSG_ERRQUEUE, 0):
            while True:
                try:
                    data, ancillary, _flags, _peer = sock.recvmsg(2048, 512, flags)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # the pending error, already read from the error queue
                # An echo, or (error queue) the probe an ICMP port-unreachable carried back:
                # either way the host answered that sequence number. Other errors (host or net
                # unreachable, often from our own stack when ARP fails) are no answer.
                if flags and _queued_errno(ancillary) != errno.ECONNREFUSED:
                    continue
                if len(data) >= UDP_PROBE.size:
                    magic, seq, _sent = UDP_PROBE.unpack_from(data)
                    if magic == UDP_MAGIC:
                        self._answer(host, seq, _kernel_time_ns(ancillary))

    def _tcp_done(self, sock: socket.socket, host: _Host, seq: int) -> None:
        arrival = time.time_ns()
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._close_tcp(host, seq)
        if error in (0, errno.ECONNREFUSED):  # SYN-ACK or RST: the host answered
            host.report.timestamps = "user"
            self._answer(host, seq, arrival)
        else:
            host.report.errors.append(f"tcp probe {seq}: {os.strerror(error)}")

    def _close_tcp(self, host: _Host, seq: int) -> None:
        sock = host.tcp.pop(seq, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()

    def _expire(self, host: _Host, seq: int) -> None:
        """A probe unanswered after the timeout: lost, if its method is still the host's."""
        del host.pending[seq]
        self._close_tcp(host, seq)
        if host.method_of(seq) == host.method_index:
            host.report.lost_seqs.append(seq)
        self._maybe_fall_back(host)

    def _maybe_fall_back(self, host: _Host) -> None:
        """After DISCOVERY_PROBES unanswered probes of a method, try the next one."""
        if not self.fallback or host.settled or host.method_probes < DISCOVERY_PROBES:
            return
        first = host.changes[-1][0]
        if any(first <= s < first + DISCOVERY_PROBES for s in host.pending):
            return  # the discovery probes may still be answered
        host.report.tried.append(self._method_name(host))
        host.method_index = (host.method_index + 1) % len(METHODS)
        host.changes.append((host.seq, host.method_index))
        # Every method tried without an answer: back to ICMP, counting loss from now on.
        host.settled = host.method_index == 0
        host.method_probes = 0
        # What an abandoned method lost is not loss of the path.
        host.report.lost_seqs = []
        host.report.sent = 0

    def _method_name(self, host: _Host) -> str:
        return {"icmp": host.icmp_method, "tcp": f"tcp-connect:{self.tcp_port}",
                "udp": f"udp:{self.udp_port}"}[host.method]

    def _finish(self, host: _Host) -> ProbeReport:
        report = host.report
        report.method = self._method_name(host)
        # Probes still in flight when a stop cut the wait short are neither answered nor lost.
        report.sent -= sum(1 for s in host.pending if host.method_of(s) == host.method_index)
        report.received = len(report.rtts_ms)
        report.lost_seqs.sort()
        return report


def gateway_address() -> tuple[Optional[str], Optional[str]]:
    """(address, None) of the IPv4 (else IPv6) default gateway, scoped when link-local; (None, reason)."""
    route = links.default_gateway(4) or links.default_gateway(6)
    if route is None:
        return None, "no default gateway to probe"
    address = route.gateway
    if route.family == 6 and address.startswith("fe80"):
        address = f"{address}%{route.ifname}"
    return address, None


RESOLVER_THREADS = 8  # lookups at once, process-wide; a hung resolver holds at most this many threads
_resolver_slots = threading.BoundedSemaphore(RESOLVER_THREADS)


def _lookup(name: str) -> tuple[Optional[str], Optional[str]]:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return None, f"cannot resolve {name!r}: {exc.strerror}"
    except (OSError, ValueError) as exc:  # UnicodeError: a label IDNA cannot encode; ValueError: a NUL byte
        return None, f"cannot resolve {name!r}: {exc}"
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos[0][4][0], None


def resolve_hosts(names: list[str], timeout: float = 5.0) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """Each name -> (address, None) or (None, why), resolved once, several at the same time.

    Addresses are returned as given; names take their first address (IPv4 first,
    as a router's uplink is more often IPv4-only). A name still unresolved after
    `timeout` seconds (a resolver that does not answer) is an error, not a wait.
    At most RESOLVER_THREADS lookups run at once in the whole process: a resolver
    that never answers keeps that many threads, not one per name ever asked.
    """
    results: dict[str, tuple[Optional[str], Optional[str]]] = {}
    pending = deque(dict.fromkeys(names))
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def worker() -> None:
        try:
            while time.monotonic() < deadline:
                with lock:
                    if not pending:
                        return
                    name = pending.popleft()
                answer = _lookup(name)
                with lock:
                    results[name] = answer
        finally:
            _resolver_slots.release()

    threads = []
    for _ in range(min(len(pending), RESOLVER_THREADS)):
        if not _resolver_slots.acquire(blocking=False):
            break
        threads.append(threading.Thread(target=worker, daemon=True, name="rtk-qos-resolve"))
        threads[-1].start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        done = dict(results)
    why = (f"no answer within {timeout:.0f} s" if threads else
           f"every one of the {RESOLVER_THREADS} resolver threads is still waiting for an earlier lookup")
    return {name: done.get(name, (None, f"cannot resolve {name!r}: {why}")) for name in names}


COLLECT_PROBES = 3


def collect() -> dict:
    """Three ICMP echo probes of the default gateway: RTTs, loss, and the socket kind used."""
    address, problem = gateway_address()
    if address is None:
        return {"gateway": None, "unavailable": problem}
    try:
        report = Prober([address], interval=0.2, timeout=1.0, fallback=False).run(COLLECT_PROBES * 0.2)[address]
    except ProbeUnavailable as exc:
        return {"gateway": address, "unavailable": str(exc)}
    return {"gateway": address, "method": report.method, "sent": report.sent, "received": report.received,
            "rtts_ms": [round(rtt, 3) for rtt in report.rtts_ms], "loss_percent": round(report.loss_percent, 1)}


COLLECTOR = register(Collector(
    name="probe", summary="ICMP echo round trips to the default gateway",
    cost=f"{COLLECT_PROBES} ICMP echo requests to the gateway, about 1.5 s; off unless named, as it sends packets",
    collect=collect, enabled=False))
