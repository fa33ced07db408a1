"""The process's one continuous probe: the default gateway and configured hosts, about once a second each.

The agent records it into the history; commands that want a target it probes
(the traffic analysis's gateway, a performance monitor's gateway or broker)
`subscribe` to its replies and losses instead of probing the same host again.

It runs in its own thread: the `Prober` is a blocking select loop on its own
absolute send schedule with kernel receive timestamps, and looking up routes
and names (up to 5 s for a resolver that does not answer) must not delay the
1 Hz monitor loop. The thread never touches the history: it keeps, per target,
the replies not yet taken, the RFC 3550 jitter and the outcomes of the last
probes, under a lock; once a second the monitor loop `take()`s one sample per
target and records it (the history then has a single writer).

Probes are ICMP echo only: the Prober's TCP/UDP fallback would hide loss while
it tries methods. A probe is
lost when no reply came within `probe.timeout_s`, or when it could not be sent
at all (no route, link down). `loss_pct` is the percent lost of the last
`LOSS_WINDOW` (60) resolved probes, a minute at the default rate; `latency_ms`
the round trip of the replies that arrived since the last take (their mean
when the rate is above 1/s), none in a second without reply; `jitter_ms` the
interarrival jitter (RFC 3550, native `Jitter`, over consecutive replies, the
RTT standing for the transit time) after that second's replies, none without one.

Sends are placed half a monitor period after the monitor's ticks, so a reply
faster than that lands in the tick it belongs to. The Prober runs in segments of
`SEGMENT_S` (5 min), after which the gateway and the names are looked up again
(routes change, DHCP); the last probe of a segment is waited out, a gap of at
most `probe.timeout_s` every 5 minutes. No gateway, no name, no ICMP socket:
nothing is probed for that target, the reason is logged once and shown in the
agent's state (`agent.probe.problems`), and it is looked up again at the next
segment, or after `RETRY_S` (30 s) when there is nothing at all to probe.
"""
from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from typing import Callable, Optional

from .. import _core
from ..collectors.probe import Prober, ProbeReport, ProbeUnavailable, gateway_address, resolve_hosts

log = logging.getLogger(__name__)
LOSS_WINDOW = 60     # probes in the sliding window of loss_pct
SEGMENT_S = 300.0    # one Prober run between looking the targets up again
RETRY_S = 30.0       # nothing to probe: look again after this long
GATEWAY = "gateway"


class _Target:
    def __init__(self, name: str, address: str):
        self.name = name
        self.address = address
        self.jitter = _core.Jitter()
        self.outcomes: deque = deque(maxlen=LOSS_WINDOW)  # 1 lost, 0 answered, in resolution order
        self.replies: list[float] = []                     # RTTs (ms) not yet taken


class _ContinuousProber(Prober):
    """A Prober that reports each probe's loss as it is known (timed out, or not sent)."""

    def __init__(self, addresses: list[str], interval: float, timeout: float,
                 on_lost: Callable[[str, int], None]):
        super().__init__(addresses, interval, timeout, fallback=False)
        self._on_lost = on_lost

    def _send(self, host) -> None:
        seq = host.seq
        super()._send(host)
        if seq not in host.pending:  # the send failed (no route, link down): lost, not skipped
            self._on_lost(host.address, seq)

    def _expire(self, host, seq: int) -> None:
        super()._expire(host, seq)
        self._on_lost(host.address, seq)


class Subscription:
    """What the continuous probe saw of one address from `subscribe()` to `close()`: a command's view.

    Replies and losses arrive from the probe thread; `report()` and `live_loss()` may be called
    from the command's thread at any time.
    """

    def __init__(self, probe: "ContinuousProbe", name: str, address: str):
        self.name = name
        self.address = address
        self._probe = probe
        self._lock = threading.Lock()
        self._report = ProbeReport(address, "icmp")
        self._resolved: list[tuple[float, int]] = []  # (monotonic time, 1 lost / 0 answered), in order
        self._highest = -1
        self._listeners: list[Callable[[float], None]] = []

    def on_reply(self, listener: Callable[[float], None]) -> None:
        """Also call listener(rtt_ms) for each reply (from the probe thread)."""
        self._listeners.append(listener)

    def _reply(self, seq: int, rtt_ms: float) -> None:
        now = time.monotonic()
        with self._lock:
            report = self._report
            if seq < self._highest:
                report.reordered += 1
            self._highest = max(self._highest, seq)
            report.rtts_ms.append(rtt_ms)
            report.seqs.append(seq)
            report.arrivals.append(now)
            self._resolved.append((now, 0))
        for listener in self._listeners:
            listener(rtt_ms)

    def _lost(self, seq: int) -> None:
        with self._lock:
            self._report.lost_seqs.append(seq)
            self._resolved.append((time.monotonic(), 1))

    def live_loss(self, window_s: float) -> Optional[float]:
        """Percent lost of the probes resolved in the last `window_s` seconds; None before any."""
        since = time.monotonic() - window_s
        with self._lock:
            first = bisect.bisect_left(self._resolved, (since, -1))
            recent = self._resolved[first:]
        return 100.0 * sum(lost for _, lost in recent) / len(recent) if recent else None

    def close(self) -> ProbeReport:
        """Stop listening; the report of every probe resolved meanwhile (in flight at the end: not counted)."""
        self._probe._unsubscribe(self)
        with self._lock:
            report = self._report
            report.method = self._probe.icmp_method(self.address)
            report.received = len(report.rtts_ms)
            report.sent = report.received + len(report.lost_seqs)
            report.lost_seqs.sort()
            return report


class ContinuousProbe:
    """Probes the default gateway (series `probe.gateway.*`) and `targets` (`probe.<host>.*`)."""

    def __init__(self, targets: list[str], interval: float, timeout: float, stop: threading.Event,
                 anchor: Optional[Callable[[], Optional[float]]] = None, period: float = 1.0):
        self.names = [GATEWAY] + [t for t in targets if t != GATEWAY]
        self.configured = list(targets)
        self.interval = interval
        self.timeout = timeout
        self.period = period
        self._anchor = anchor
        self._stop = stop
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}            # name -> target, those being probed
        self._by_address: dict[str, list[_Target]] = {}
        self.problems: dict[str, str] = {}                # name -> why it is not probed
        self._prober: Optional[_ContinuousProber] = None   # the current segment's
        # Sequence numbers restart with every segment's Prober: subscribers see them continued.
        self._seq_base: dict[str, int] = {}
        self.ready = threading.Event()                    # the first look-up is done
        self._subscriptions: list[Subscription] = []
        self._thread = threading.Thread(target=self._run, name="rtk-qos-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the monitor's side -------------------------------------------------------------------

    def take(self) -> dict[str, dict[str, float]]:
        """target -> {latency_ms, jitter_ms, loss_pct} for this second, NaN where there is no sample."""
        out = {}
        with self._lock:
            for target in self._targets.values():
                replies, target.replies = target.replies, []
                outcomes = target.outcomes
                out[target.name] = {
                    "latency_ms": sum(replies) / len(replies) if replies else math.nan,
                    "jitter_ms": target.jitter.jitter if replies and target.jitter.n >= 2 else math.nan,
                    "loss_pct": 100.0 * sum(outcomes) / len(outcomes) if outcomes else math.nan,
                }
        return out

    def icmp_method(self, address: str) -> str:
        prober = self._prober
        return (prober.icmp_method(address) if prober else None) or "icmp"

    def address_of(self, name: str) -> Optional[str]:
        """The address a target (GATEWAY or a configured name) is probed at now, None if it is not."""
        with self._lock:
            target = self._targets.get(name)
            return target.address if target else None

    def subscribe_target(self, name: str, wait_s: float) -> tuple[Optional[Subscription], Optional[str]]:
        """(subscription, None) to a target by name (GATEWAY, a configured host), waiting up to
        `wait_s` for the first look-up; (None, why) when it is not being probed."""
        self.ready.wait(wait_s)
        address = self.address_of(name)
        subscription = self.subscribe(address) if address else None
        if subscription is not None:
            return subscription, None
        with self._lock:
            why = self.problems.get(name)
        return None, why or (f"{name} is not probed yet" if not self.ready.is_set() else f"{name} is not probed")

    def subscribe(self, address: str) -> Optional[Subscription]:
        """Replies and losses of `address` from now on, if it is being probed; None otherwise."""
        with self._lock:
            if address not in self._by_address:
                return None
            subscription = Subscription(self, address, address)
            self._subscriptions.append(subscription)
            return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def status(self) -> dict:
        with self._lock:
            return {"interval_s": self.interval, "loss_window": LOSS_WINDOW,
                    "targets": {t.name: t.address for t in self._targets.values()},
                    "problems": dict(self.problems)}

    # ---- the probe thread ---------------------------------------------------------------------

    def _on_reply(self, address: str, seq: int, rtt_ms: float) -> None:
        with self._lock:
            for target in self._by_address.get(address, ()):
                target.replies.append(rtt_ms)
                target.jitter.update(rtt_ms)
                target.outcomes.append(0)
            listeners = [s for s in self._subscriptions if s.address == address]
            seq += self._seq_base.get(address, 0)
        for subscription in listeners:
            subscription._reply(seq, rtt_ms)

    def _on_lost(self, address: str, seq: int) -> None:
        with self._lock:
            for target in self._by_address.get(address, ()):
                target.outcomes.append(1)
            listeners = [s for s in self._subscriptions if s.address == address]
            seq += self._seq_base.get(address, 0)
        for subscription in listeners:
            subscription._lost(seq)

    def _lookup(self) -> tuple[dict[str, str], dict[str, str]]:
        """name -> address of what can be probed now, and name -> why not for the rest."""
        found, problems = {}, {}
        address, problem = gateway_address()
        if address is None:
            problems[GATEWAY] = problem
        else:
            found[GATEWAY] = address
        names = [n for n in self.names if n != GATEWAY]
        for name, (address, problem) in (resolve_hosts(names).items() if names else ()):
            if address is None:
                problems[name] = problem
            else:
                found[name] = address
        return found, problems

    def _set_problems(self, problems: dict[str, str]) -> None:
        for name, why in problems.items():
            if self.problems.get(name) != why:
                log.warning("probe %s: %s; not probed until a later look-up finds it", name, why)
        for name in self.problems.keys() - problems.keys():
            log.info("probe %s: probing again", name)
        self.problems = problems

    def _use(self, found: dict[str, str]) -> None:
        with self._lock:
            targets = {}
            for name, address in found.items():
                target = self._targets.get(name)
                if target is None or target.address != address:  # a new gateway starts afresh
                    if target is not None:
                        log.info("probe %s: now %s (was %s)", name, address, target.address)
                    target = _Target(name, address)
                targets[name] = target
            self._targets = targets
            self._by_address = {}
            for target in targets.values():
                self._by_address.setdefault(target.address, []).append(target)

    def _align(self) -> None:
        """Wait until half a monitor period after one of its ticks."""
        anchor = self._anchor() if self._anchor else None
        if anchor is None:
            return
        now = time.monotonic()
        at = anchor + self.period / 2
        if at < now:
            at += math.ceil((now - at) / self.period) * self.period
        self._stop.wait(at - now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._segment()
            except Exception:  # the probe must outlive a bug in one segment
                log.exception("continuous probe failed; starting it again")
                self._stop.wait(RETRY_S)

    def _segment(self) -> None:
        found, problems = self._lookup()
        if not found:
            with self._lock:
                self._set_problems(problems)
            self._use({})
            self.ready.set()
            self._stop.wait(RETRY_S)
            return
        prober = _ContinuousProber(list(dict.fromkeys(found.values())), self.interval, self.timeout,
                                   self._on_lost)
        self._align()
        if self._stop.is_set():
            return
        with self._lock:
            self._set_problems(problems)
        self._use(found)
        self._prober = prober
        self.ready.set()
        try:
            report = prober.run(SEGMENT_S, self._stop, self._on_reply)
        except ProbeUnavailable as exc:
            with self._lock:
                self._set_problems({name: str(exc) for name in found} | problems)
            self._use({})
            self.ready.set()
            self._stop.wait(RETRY_S)
            return
        with self._lock:
            for address in report:
                self._seq_base[address] = self._seq_base.get(address, 0) + prober.sequences_used(address)
        for address, r in report.items():
            if r.errors:
                log.debug("probe %s: %d probes not sent (%s)", address, len(r.errors), r.errors[-1])
