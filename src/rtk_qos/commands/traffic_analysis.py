"""qos_traffic_analysis: measure the traffic crossing the interfaces for `duration` seconds.

Data flows one way: the process's link sampler reads every link's kernel
counters once a second; this command ingests one reading per sampling interval
into a native Sampler of its own (its rings, its window); at the end this module
turns rings, protocol counters, flow tables and gateway probes into the
result. Every figure is measured; what cannot be measured here is null and
its reason is listed under the section's `unavailable`.

Units: throughput in Mbit/s (10^6 bits per second), sizes in bytes, times in
milliseconds unless a key says otherwise.
"""
from __future__ import annotations

import contextlib
import queue
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import _core
from ..collectors import flows, links, snmp
from ..protocol.errors import CommandError
from ..services import GATEWAY
from ..vocab.units import MAD_TO_SIGMA, mbps
from .base import CommandSpec, Context, register

OP = "qos_traffic_analysis"
# Per-sample series of every tracked link live in memory for the whole run; a
# router has little, so a run that would need more is refused up front.
SAMPLE_MEMORY_BUDGET = 16 * 1024 * 1024
ROLLING_WINDOW = 60
PROGRESS_EVERY_S = 10.0
READINGS_QUEUED = 8      # readings waiting for this run; past it the oldest is dropped
READING_POLL_S = 0.25    # how often a wait for the next reading looks at cancel and deadline
READING_EARLY_S = 0.5    # a reading this much before an interval's tick stands for it
STALL_S = 5.0            # no reading this long past its time: the counters are unreadable
PROBE_READY_S = 5.0  # at most this long for the continuous probe's first look-up (a starting process)
# Bursts: runs of samples above max(median + 3 robust sigma, 2 x median, 1 kbit/s).
BURST_SIGMAS = 3.0
BURST_MEDIAN_FACTOR = 2.0
BURST_FLOOR_BYTES_S = 125.0
PEAK_QUANTILE = 0.9
MAX_PEAK_PERIODS = 5
MIN_PATTERN_SAMPLES = 5


def estimate_ms(args: dict) -> int:
    return args["duration"] * 1000 + 500


@dataclass
class Interface:
    name: str
    info: Optional[links.LinkInfo]
    slots: list = field(default_factory=list)


def _mbps(bytes_per_s: float) -> float:
    return round(mbps(bytes_per_s), 3)


def _select(args: dict, snapshot: list) -> list[Interface]:
    present = {row[1]: row for row in snapshot}
    infos = {info.name: info for info in links.list_links()}
    wanted = args.get("interfaces")
    if wanted:
        missing = [name for name in wanted if name not in present]
        if missing:
            raise CommandError(
                "E_RESOURCE_UNAVAILABLE",
                f"args.interfaces: no interface named {missing[0]!r} on this device",
                details="present: " + ", ".join(sorted(present)))
        names = wanted
    else:
        carried = {name: row[2] + row[3] for name, row in present.items()}
        names = links.active_interfaces(carried)
        if not names:
            raise CommandError(
                "E_RESOURCE_UNAVAILABLE",
                "args.interfaces: none given and no interface is up, not loopback and carrying traffic",
                details="present: " + ", ".join(sorted(present)))
    return [Interface(name, infos.get(name)) for name in names]


class _GatewayProbe:
    """The gateway's replies and losses from the process's continuous probe while the sampling runs."""

    def __init__(self, ctx: Context):
        self.report = None
        self.reason: Optional[str] = None
        probes = ctx.services.probes
        self._subscription = None
        if probes is None:
            self.reason = "this process runs no continuous probe (history.probe_interval_s is 0)"
        else:
            self._subscription, self.reason = probes.subscribe_target(GATEWAY, PROBE_READY_S)

    def finish(self) -> None:
        if self._subscription is not None:
            self.report = self._subscription.close()


class _Readings:
    """The process's link sampler's readings, as they come, for one run (a bounded queue)."""

    def __init__(self, ctx: Context):
        self._queue: queue.Queue = queue.Queue(maxsize=READINGS_QUEUED)
        # The run starts now, from a reading of its own; the ticks after it come from the sampler.
        self._put(ctx.services.sampler.read_now())
        self._unsubscribe = ctx.services.sampler.subscribe(self._put)
        self.source = ctx.services.sampler

    def _put(self, reading) -> None:
        while True:  # the oldest reading gives way: this run only wants the newest
            try:
                self._queue.put_nowait(reading)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def next(self, ctx: Context, not_before: float, stall_s: float):
        """The first reading taken at or after monotonic `not_before`; None when the command is
        stopped; TimeoutError when none comes within `stall_s` of `not_before`."""
        give_up = max(not_before, _core.monotonic()) + stall_s  # -inf: from now
        while not ctx.stopped():
            try:
                reading = self._queue.get(timeout=min(READING_POLL_S, max(0.0, give_up - _core.monotonic())))
            except queue.Empty:
                if _core.monotonic() >= give_up:
                    raise TimeoutError from None
                continue
            if reading.when >= not_before:
                return reading
        return None

    def close(self) -> None:
        self._unsubscribe()


def run(args: dict, ctx: Context) -> dict:
    duration, interval = args["duration"], args["sampling_interval"]
    if interval > duration:
        raise CommandError("E_INVALID_COMMAND",
                           f"args.sampling_interval: {interval} is above args.duration {duration}")
    analysis_type = args["analysis_type"]
    detailed = analysis_type != "basic"
    samples_wanted = duration // interval

    snapshot = _core.CounterReader().read()
    selected = _select(args, snapshot)
    capacity = len(selected) + min(len(selected), 8)  # room for links re-created mid-run
    history = samples_wanted + 1
    window = min(ROLLING_WINDOW, max(samples_wanted, 1))
    needed = _core.Sampler.arena_bytes(capacity, history)
    if needed > SAMPLE_MEMORY_BUDGET:
        raise CommandError(
            "E_RESOURCE_UNAVAILABLE",
            f"args: {len(selected)} interfaces x {samples_wanted} samples need "
            f"{needed // 2**20} MiB of sample memory, above the {SAMPLE_MEMORY_BUDGET // 2**20} MiB "
            "budget; raise sampling_interval or name fewer interfaces")
    sampler = _core.Sampler(capacity=capacity, history=history, window=window, open_reader=False)
    sampler.track([iface.name for iface in selected])
    readings = _Readings(ctx)

    snmp_before = snmp.read_snmp() if detailed else None
    flow_samples = [flows.flow_count()] if detailed else []
    probe = _GatewayProbe(ctx) if detailed else None

    warnings: list[str] = []
    vanished: dict[int, int] = {}
    wall0, mono0 = _clock_anchor(ctx)
    start = mono0
    next_progress = start + PROGRESS_EVERY_S
    for k in range(0, samples_wanted + 1):
        # A reading counts for an interval's tick when it is at most half a period early; the
        # last one is never early, so a run lasts its whole duration.
        not_before = (float("-inf") if k == 0 else start + k * interval if k == samples_wanted
                      else start + k * interval - READING_EARLY_S)
        try:
            reading = readings.next(ctx, not_before, interval + STALL_S)
        except TimeoutError:
            warnings.append(f"no counter reading for {interval + STALL_S:.0f} s (counters unreadable) "
                            f"after {max(0, k - 1)} samples")
            break
        if reading is None:
            break
        sampler.ingest(reading.counters, reading.when)
        if k == 0:
            start = reading.when
            continue
        if sampler.vanished:
            now_ms = wall0 + int((_core.monotonic() - mono0) * 1000)
            for slot in sampler.slots():
                if slot["state"] == "gone" and slot["slot"] not in vanished:
                    vanished[slot["slot"]] = now_ms
        if analysis_type == "realtime":
            ctx.progress(_sample_progress(sampler, selected, k, samples_wanted, wall0, mono0))
        elif _core.monotonic() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            ctx.progress({"op": OP, "stage": "sampling", "samples": k, "of": samples_wanted,
                          "percent": round(100.0 * k / samples_wanted, 1)})

    readings.close()
    if probe:
        probe.finish()
    slots = sampler.slots()
    for iface in selected:
        iface.slots = [s for s in slots if s["name"] == iface.name]
    first_tick, times = sampler.tick_times()
    elapsed = times[-1] - times[0] if len(times) > 1 else 0.0
    for slot_id, when in sorted(vanished.items()):
        name = slots[slot_id]["name"]
        warnings.append(f"interface {name} vanished at {_clock(when)}; its figures stop there")

    result = {
        "analysis_summary": None,
        "interface_stats": [_interface_stats(sampler, iface, times, first_tick, vanished)
                            for iface in selected],
    }
    aggregate = _aggregate(sampler, selected, sampler.ticks - 1)
    result["analysis_summary"] = _summary(result["interface_stats"], aggregate, elapsed, args,
                                          readings.source.source, wall0, mono0, times)
    if detailed:
        flow_samples.append(flows.flow_count())
        snmp_after = snmp.read_snmp()
        if args["include_protocols"]:
            result["protocol_distribution"] = snmp.protocol_distribution(snmp_before, snmp_after)
        result["traffic_patterns"] = _patterns(result, aggregate, times, wall0, mono0, flow_samples,
                                               interval)
        result["qos_metrics"] = _qos_metrics(probe, snmp.tcp_quality(snmp_before, snmp_after))
    result.update(_grade(result))
    if ctx.stop_reason:
        warnings.append(f"stopped early ({ctx.stop_reason}) after {sampler.ticks - 1} of "
                        f"{samples_wanted} samples")
    result["warnings"] = warnings
    return result


def _clock_anchor(ctx: Context) -> tuple[int, float]:
    """Wall-clock ms and native monotonic seconds read together, to date samples."""
    return ctx.clock.wall_ms(), _core.monotonic()


def _clock(wall_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall_ms / 1000))


def _wall(mono: float, wall0: int, mono0: float) -> int:
    return wall0 + int(round((mono - mono0) * 1000))


def _sample_progress(sampler, selected, k, of, wall0, mono0) -> dict:
    """One realtime sample: the latest rate of each selected interface."""
    active = {name: slot for slot, name in sampler.active_slots()}
    per_iface = {}
    for iface in selected:
        if iface.name not in active:
            continue
        rates = sampler.last_rates(active[iface.name])
        per_iface[iface.name] = {"rx_mbps": _mbps(rates[0]), "tx_mbps": _mbps(rates[1]),
                                 "rx_pps": round(rates[2], 1), "tx_pps": round(rates[3], 1)}
    return {"op": OP, "stage": "sample", "sample": k, "of": of,
            "ts": _wall(sampler.last_time, wall0, mono0), "interfaces": per_iface,
            "throughput_mbps": round(sum(v["rx_mbps"] + v["tx_mbps"] for v in per_iface.values()), 3)}


def _interface_stats(sampler, iface: Interface, times, first_tick: int, vanished: dict) -> dict:
    totals = {name: sum(s["totals"][name] for s in iface.slots) for name in _core.COUNTERS}
    alive_s = sum(_slot_seconds(s, times, first_tick) for s in iface.slots)
    out = {"interface": iface.name, **totals}
    samples = sum(s["samples"] for s in iface.slots)
    out["samples"] = samples
    peaks = {"rx_bytes": 0.0, "tx_bytes": 0.0}
    p95 = dict(peaks)
    for slot in iface.slots:
        for metric in peaks:
            if slot["samples"]:
                summary = sampler.summary(slot["slot"], metric, slot["samples"])
                peaks[metric] = max(peaks[metric], summary["max"])
                p95[metric] = max(p95[metric], summary["p95"])
    avg_rx = totals["rx_bytes"] / alive_s if alive_s > 0 else 0.0
    avg_tx = totals["tx_bytes"] / alive_s if alive_s > 0 else 0.0
    out.update({
        "avg_rx_mbps": _mbps(avg_rx), "avg_tx_mbps": _mbps(avg_tx),
        "peak_rx_mbps": _mbps(peaks["rx_bytes"]), "peak_tx_mbps": _mbps(peaks["tx_bytes"]),
        "p95_rx_mbps": _mbps(p95["rx_bytes"]), "p95_tx_mbps": _mbps(p95["tx_bytes"]),
    })
    packets = totals["rx_packets"] + totals["tx_packets"]
    out["error_rate_percent"] = (round(100.0 * (totals["rx_errors"] + totals["tx_errors"]) / packets, 4)
                                 if packets else None)
    out["drop_rate_percent"] = (round(100.0 * (totals["rx_dropped"] + totals["tx_dropped"]) / packets, 4)
                                if packets else None)
    speed = iface.info.speed_mbps if iface.info else None
    out["speed_mbps"] = speed
    if speed:
        # Full duplex: each direction has the whole link speed; the busier one is the utilisation.
        out["utilization_percent"] = round(100.0 * max(out["avg_rx_mbps"], out["avg_tx_mbps"]) / speed, 3)
        out["peak_utilization_percent"] = round(
            100.0 * max(out["peak_rx_mbps"], out["peak_tx_mbps"]) / speed, 3)
    else:
        out["utilization_percent"] = out["peak_utilization_percent"] = None
        reason = iface.info.speed_reason if iface.info else "interface has no sysfs entry"
        out["unavailable"] = {"utilization_percent": reason or "link speed unknown"}
    gone = [s for s in iface.slots if s["state"] == "gone"]
    out["state"] = "vanished" if gone and gone[-1] is iface.slots[-1] else "present"
    if gone:
        out["vanished_at_ms"] = [vanished.get(s["slot"]) for s in gone]
    out["counter_wraps"] = sum(s["wraps"] for s in iface.slots)
    out["counter_resets"] = sum(s["resets"] for s in iface.slots)
    return out


def _slot_seconds(slot: dict, times, first_tick: int) -> float:
    """Seconds between a slot's first and last reading, from the tick clock."""
    first = slot["first_tick"] - first_tick
    last = slot["last_tick"] - first_tick
    if first < 0 or last >= len(times):
        return 0.0
    return times[last] - times[first]


def _aggregate(sampler, selected: list, samples: int) -> list[float]:
    """Per sample, bytes/s summed over every selected interface, both directions."""
    if samples <= 0:
        return []
    ids = [s["slot"] for iface in selected for s in iface.slots]
    rx = sampler.sum_series(ids, "rx_bytes", 1, samples)
    tx = sampler.sum_series(ids, "tx_bytes", 1, samples)
    return [a + b for a, b in zip(rx, tx)]


def _summary(stats: list, aggregate: list, elapsed: float, args: dict, source, wall0, mono0,
             times) -> dict:
    total_bytes = sum(s["rx_bytes"] + s["tx_bytes"] for s in stats)
    total_packets = sum(s["rx_packets"] + s["tx_packets"] for s in stats)
    return {
        "total_bytes": total_bytes,
        "total_packets": total_packets,
        "avg_throughput_mbps": _mbps(total_bytes / elapsed) if elapsed > 0 else 0.0,
        "peak_throughput_mbps": _mbps(max(aggregate)) if aggregate else 0.0,
        "analysis_duration": round(elapsed, 3),
        "requested_duration": args["duration"],
        "samples": len(aggregate),
        "sampling_interval": args["sampling_interval"],
        "analysis_type": args["analysis_type"],
        "interfaces": [s["interface"] for s in stats],
        "counter_source": source,
        "started_at": _wall(times[0], wall0, mono0) if len(times) else None,
        "ended_at": _wall(times[-1], wall0, mono0) if len(times) else None,
    }


def _runs(values: list[float], threshold: float) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of consecutive values at or above threshold."""
    runs, start = [], None
    for i, v in enumerate(values):
        if v >= threshold and start is None:
            start = i
        elif v < threshold and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(values)))
    return runs


def _patterns(result: dict, aggregate: list, times, wall0, mono0, flow_samples, interval) -> dict:
    summary = result["analysis_summary"]
    out: dict = {"avg_packet_size": (round(summary["total_bytes"] / summary["total_packets"], 1)
                                     if summary["total_packets"] else None)}
    unavailable = {}
    if out["avg_packet_size"] is None:
        unavailable["avg_packet_size"] = "no packets crossed the interfaces"
    counts = [c for c, _src in flow_samples if c is not None]
    out["flow_count"] = max(counts) if counts else None
    out["flow_count_source"] = flow_samples[-1][1] if flow_samples else None
    if out["flow_count"] is None:
        unavailable["flow_count"] = flow_samples[-1][1] if flow_samples else "not sampled"

    if len(aggregate) < MIN_PATTERN_SAMPLES:
        reason = f"{len(aggregate)} samples; patterns need at least {MIN_PATTERN_SAMPLES}"
        out.update({"peak_hours": None, "peak_periods": None, "burst_frequency": None, "bursts": None})
        unavailable.update({"peak_hours": reason, "burst_frequency": reason})
        out["unavailable"] = unavailable
        return out

    median, mad = _core.median_mad(aggregate)
    threshold = max(median + BURST_SIGMAS * MAD_TO_SIGMA * mad, BURST_MEDIAN_FACTOR * median,
                    BURST_FLOOR_BYTES_S)
    bursts = _runs(aggregate, threshold)
    minutes = len(aggregate) * interval / 60.0
    out["bursts"] = len(bursts)
    out["burst_frequency"] = round(len(bursts) / minutes, 3)
    out["burst_threshold_mbps"] = _mbps(threshold)

    # Sample j (0-based) covers the interval that ends at tick j + 1.
    peak_level = _core.quantile(aggregate, PEAK_QUANTILE)
    periods = []
    if max(aggregate) > median and peak_level > 0:
        for a, b in _runs(aggregate, peak_level):
            start_ms = _wall(times[a], wall0, mono0) if a < len(times) else None
            end_ms = _wall(times[b], wall0, mono0) if b < len(times) else None
            chunk = aggregate[a:b]
            periods.append({"start_ms": start_ms, "end_ms": end_ms,
                            "avg_mbps": _mbps(sum(chunk) / len(chunk)), "peak_mbps": _mbps(max(chunk))})
        periods.sort(key=lambda p: p["avg_mbps"], reverse=True)
        periods = periods[:MAX_PEAK_PERIODS]
    out["peak_periods"] = periods
    out["peak_hours"] = [f"{_clock(p['start_ms'])}-{_clock(p['end_ms'])}" for p in periods
                         if p["start_ms"] is not None and p["end_ms"] is not None]
    out["peak_threshold_mbps"] = _mbps(peak_level)
    if unavailable:
        out["unavailable"] = unavailable
    return out


def _qos_metrics(probe: Optional[_GatewayProbe], tcp: dict) -> dict:
    out: dict = {}
    unavailable: dict = {}
    report = probe.report if probe else None
    if report is not None and report.rtts_ms:
        rtts = list(report.rtts_ms)
        jitter = _core.Jitter()
        jitter.extend(rtts)
        out.update({
            "avg_latency_ms": round(sum(rtts) / len(rtts), 3),
            "min_latency_ms": round(min(rtts), 3),
            "max_latency_ms": round(max(rtts), 3),
            "p95_latency_ms": round(_core.quantile(rtts, 0.95), 3),
            "jitter_ms": round(jitter.jitter, 3),
            "ipdv_mean_ms": round(jitter.ipdv_mean, 3),
        })
    else:
        reason = (probe.reason if probe and probe.reason else
                  f"no reply from {report.address}" if report is not None else "gateway not probed")
        for key in ("avg_latency_ms", "jitter_ms"):
            out[key] = None
            unavailable[key] = reason
    if report is not None and report.sent:
        out["packet_loss_percent"] = round(report.loss_percent, 3)
        out["latency_target"] = report.address
        out["probe_method"] = report.method
        out["probes_sent"] = report.sent
        out["probes_reordered"] = report.reordered
        out["probes_duplicated"] = report.duplicates
    else:
        out["packet_loss_percent"] = None
        unavailable["packet_loss_percent"] = (probe.reason if probe and probe.reason
                                              else "no probe was sent")
    out["out_of_order_percent"] = tcp.get("out_of_order_percent")
    out["tcp_retransmit_percent"] = tcp.get("retransmit_percent")
    for key in ("out_of_order_percent", "retransmit_percent"):
        if tcp.get(key) is None:
            unavailable["out_of_order_percent" if key == "out_of_order_percent" else "tcp_retransmit_percent"] = (
                tcp.get("unavailable", {}).get(key, "no TCP segments during the run"))
    rtt = flows.socket_flows().get("tcp_rtt_ms")
    out["tcp_rtt_ms"] = rtt
    if rtt is None:
        unavailable["tcp_rtt_ms"] = "no established TCP connection on this host"
    if unavailable:
        out["unavailable"] = unavailable
    return out


def _grade(result: dict) -> dict:
    """performance_grade A-F from the measured figures (formula in the README).

    score = 100 - loss - latency - jitter - utilisation - errors, each penalty capped:
    loss 10 per % (max 40); latency 1 per 5 ms above 20 ms (max 20); jitter 1 per ms
    above 5 ms (max 15); peak utilisation 0.75 per % above 80 % (max 15); errors and
    drops 10 per % of packets (max 20). Figures that were not measured add no penalty
    and are left out of `grade_basis`.
    """
    penalties = {}
    qos = result.get("qos_metrics") or {}
    if qos.get("packet_loss_percent") is not None:
        penalties["packet_loss_percent"] = min(40.0, qos["packet_loss_percent"] * 10)
    if qos.get("avg_latency_ms") is not None:
        penalties["avg_latency_ms"] = min(20.0, max(0.0, qos["avg_latency_ms"] - 20) / 5)
    if qos.get("jitter_ms") is not None:
        penalties["jitter_ms"] = min(15.0, max(0.0, qos["jitter_ms"] - 5))
    utils = [s["peak_utilization_percent"] for s in result["interface_stats"]
             if s.get("peak_utilization_percent") is not None]
    if utils:
        penalties["peak_utilization_percent"] = min(15.0, max(0.0, max(utils) - 80) * 0.75)
    rates = [(s["error_rate_percent"] or 0) + (s["drop_rate_percent"] or 0)
             for s in result["interface_stats"] if s["error_rate_percent"] is not None]
    if rates:
        penalties["error_drop_percent"] = min(20.0, max(rates) * 10)
    score = max(0.0, 100.0 - sum(penalties.values()))
    grade = next(g for floor, g in ((90, "A"), (80, "B"), (70, "C"), (60, "D"), (0, "F")) if score >= floor)
    return {"performance_grade": grade, "performance_score": round(score, 1),
            "grade_basis": sorted(penalties)}


SPEC = register(CommandSpec(op=OP, run=run, estimate_ms=estimate_ms, live=True,
                            summary="Measure traffic, protocols, patterns and QoS on the interfaces"))
