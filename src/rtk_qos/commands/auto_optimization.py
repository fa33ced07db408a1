"""qos_auto_optimization: measure the uplink, find what hurts, plan a shaper, and (not dry run)
apply it as a pending transaction (shaping/transaction.py).

Measured here: the uplink's tc tree (pyroute2), its counters and errors, and the default
gateway's latency over `MEASURE_S` with the uplink's load during it (the measurement is idle
or loaded by that load, never assumed). The grade needs both an idle and a loaded measurement
(the caller's `measurements`, or a run while the uplink is busy after one while idle);
without both it is null with the reason.
"""
from __future__ import annotations

import statistics
import time
from typing import Optional

from ..collectors import links
from ..protocol.errors import CommandError
from .base import CommandSpec, Context, register

OP = "qos_auto_optimization"
MEASURE_S = 10.0
PROBE_INTERVAL_S = 0.2
LOADED_FRACTION = 0.5     # the uplink carried at least half its capacity: a loaded measurement
IDLE_FRACTION = 0.1
HISTORY_SECONDS = 3600
MIN_SECONDS = 10
# Latency increase under load -> grade (the DSLReports / Waveform scale).
GRADES = ((5, "A+"), (30, "A"), (60, "B"), (200, "C"), (400, "D"))


def estimate_ms(args: dict) -> int:
    return int(MEASURE_S * 1000) * (1 if args.get("dry_run", True) else 2) + 8000


def grade(increase_ms: Optional[float]) -> Optional[str]:
    if increase_ms is None:
        return None
    return next((g for bound, g in GRADES if increase_ms < bound), "F")


def uplink() -> tuple[str, Optional[str]]:
    route = links.default_gateway(4) or links.default_gateway(6)
    if route is None:
        raise CommandError("E_RESOURCE_UNAVAILABLE", "no default route: no uplink to shape")
    return route.ifname, route.gateway


def capacity(args: dict, ifname: str) -> tuple[int, str]:
    given = args.get("constraints", {}).get("max_bandwidth_mbps")
    if given:
        return int(given * 1e6), "constraints.max_bandwidth_mbps"
    info = links.link(ifname)
    if info is not None and info.speed_mbps:
        return info.speed_mbps * 1_000_000, f"link speed of {ifname}"
    raise CommandError("E_INVALID_COMMAND",
                       f"args.constraints.max_bandwidth_mbps: needed, {ifname} reports no speed "
                       f"({info.speed_reason if info else 'unknown link'}) and the shaper must sit just below "
                       "the real bottleneck")


def measure(ifname: str, gateway: Optional[str], ctx: Context, seconds: float = MEASURE_S) -> dict:
    """Gateway latency (median, p95) and the uplink's transmit rate over `seconds`."""
    from ..shaping.transaction import _ipr, _tx_bytes
    if gateway is None:
        return {"latency_ms": None, "reason": "no IPv4/IPv6 gateway to probe"}
    with _ipr() as ipr:
        sent0, t0 = _tx_bytes(ipr, ifname), time.monotonic()
        report = echo(gateway, PROBE_INTERVAL_S, seconds, ctx)
        sent1, t1 = _tx_bytes(ipr, ifname), time.monotonic()
    rtts = sorted(report.rtts_ms)
    rate = (sent1 - sent0) * 8 / max(t1 - t0, 1e-3)
    return {"latency_ms": _summary(rtts), "tx_mbps": round(rate / 1e6, 3), "probes": report.sent,
            "replies": report.received, "target": gateway, "seconds": round(t1 - t0, 1)}


def echo(address: str, interval: float, seconds: float, ctx: Context):
    """ICMP echo to one address for `seconds` (stops with the command): its ProbeReport."""
    from ..collectors.probe import Prober
    return Prober([address], interval=interval).run(seconds, ctx.cancel)[address]


def _summary(rtts: list[float]) -> Optional[dict]:
    if not rtts:
        return None
    p95 = rtts[min(len(rtts) - 1, int(round(0.95 * (len(rtts) - 1))))]
    return {"p50": round(statistics.median(rtts), 2), "p95": round(p95, 2)}


def history_latency(ctx: Context, ifname: str, cap_bps: int, now: Optional[int] = None) -> dict:
    """Gateway latency over the last hour's seconds, split by the uplink's load in the same
    second (idle: at most 10 % of capacity sent; loaded: at least 50 %): the agent's history."""
    from .anomaly_detection import _store
    store, problem = _store(ctx)
    tx_name, lat_name = f"{ifname}.tx_mbps", "probe.gateway.latency_ms"
    if problem or tx_name not in store.series or lat_name not in store.series:
        return {"idle": None, "loaded": None, "reason": problem or f"no {tx_name} / {lat_name} in the history"}
    last = int(time.time()) if now is None else now
    first = last - HISTORY_SECONDS
    tx = store.series[tx_name].read_columns(0, first, last)[1]
    latency = store.series[lat_name].read_columns(0, first, last)[1]
    idle, loaded = [], []
    for rate, rtt in zip(tx, latency):
        if rate != rate or rtt != rtt:  # NaN: no sample that second
            continue
        fraction = rate * 1e6 / cap_bps
        (idle if fraction <= IDLE_FRACTION else loaded if fraction >= LOADED_FRACTION else []).append(rtt)
    out = {}
    for name, values in (("idle", idle), ("loaded", loaded)):
        out[name] = {**_summary(sorted(values)), "seconds": len(values)} if len(values) >= MIN_SECONDS else None
    if not all(out.values()):
        out["reason"] = (f"the last hour has {len(idle)} idle and {len(loaded)} loaded seconds with a gateway "
                         f"probe; {MIN_SECONDS} of each are needed")
    return out


def bufferbloat(idle: Optional[dict], loaded: Optional[dict]) -> dict:
    if not idle or not loaded:
        return {"grade": None, "idle_ms": idle, "loaded_ms": loaded,
                "reason": "needs the gateway latency measured both with the uplink idle and loaded; "
                          "run again while the uplink is busy (or idle)"}
    increase = loaded["p50"] - idle["p50"]
    return {"grade": grade(increase), "increase_ms": round(increase, 2), "idle_ms": idle, "loaded_ms": loaded}


def run(args: dict, ctx: Context) -> dict:
    from ..shaping import apply as shaping_apply, capabilities, plan as shaping_plan, render, tcstate
    from ..shaping.transaction import _ipr, read_or_none
    if not args["dry_run"]:
        require_changes_allowed(OP, ctx)  # refused at once, not after a measurement it cannot use
    ifname, gateway = uplink()
    cap_bps, cap_source = capacity(args, ifname)
    constraints = args.get("constraints", {})
    with _ipr() as ipr:
        caps = capabilities.capabilities(ipr)
        tree = tcstate.read(ipr, ifname)
    stats = ipr_stats(ifname)
    ctx.progress({"phase": "measuring", "seconds": MEASURE_S})
    now = measure(ifname, gateway, ctx)
    state = {"uplink": ifname, "gateway": gateway, "capacity_mbps": cap_bps / 1e6, "capacity_source": cap_source,
             "tc_tree": tree.describe(), "interface_errors": stats, "measurement": now,
             "condition": _condition(now, cap_bps)}
    state["history"] = history_latency(ctx, ifname, cap_bps)
    issues = identify(state, tree, cap_bps)
    plan = shaping_plan.build_auto(ifname, cap_bps, cap_source, caps, args["optimization_goals"],
                                   constraints.get("priority_applications", []),
                                   constraints.get("time_window", "always"))
    with_adaptive(plan, args)
    with _ipr() as ipr:
        trees = {p.ifname: read_or_none(ipr, p) for p in plan.interfaces}
    ops = [op for p in plan.in_order() for op in shaping_apply.plan_ops(p, trees[p.ifname])]
    # This run's measurement where it is one of the two conditions, else the history's.
    loaded = now["latency_ms"] if state["condition"] == "loaded" else state["history"]["loaded"]
    idle = now["latency_ms"] if state["condition"] == "idle" else state["history"]["idle"]
    result = {
        "current_state": state,
        "identified_issues": issues,
        "optimization_plan": {**plan.summary(),
                              "tc_commands": [line for p in plan.in_order() for line in render.plan_lines(p)],
                              "capabilities": capabilities.supported(caps)},
        "diff": {"unchanged": not ops, "steps": [op.line() for op in ops]},
        "bufferbloat": bufferbloat(idle, loaded),
        "estimated_improvement": estimate(loaded, plan),
        "dry_run": args["dry_run"],
    }
    if args["dry_run"]:
        result["execution_result"] = {"status": "simulated", "changes": "none"}
        return result
    result["execution_result"] = apply_plan(plan, OP, ctx, gateway)
    ctx.progress({"phase": "verifying", "seconds": MEASURE_S})
    after = measure(ifname, gateway, ctx)
    result["verification"] = {"before": now, "after": after,
                              "note": "the same gateway probe and uplink rate, before and after the change"}
    return result


def with_adaptive(plan, args: dict) -> None:
    """The plan's adaptive shaping, checked against it (nothing is applied when it is wrong)."""
    if "adaptive" in args:
        from ..shaping.autorate import check_args
        plan.adaptive = check_args(args["adaptive"], plan)


def require_changes_allowed(op: str, ctx: Context) -> None:
    if not ctx.settings.get("allow_router_changes"):
        raise CommandError("E_INSUFFICIENT_PRIVILEGES",
                           f"{op} with dry_run false changes the router and this agent is configured read-only",
                           "set security.allow_router_changes = true to permit it")


def apply_plan(plan, op: str, ctx: Context, gateway: Optional[str]) -> dict:
    """Apply through the process's shaper (pending until confirmed); errors as CommandError."""
    from ..shaping.transaction import ShapingError, shaper
    state_dir = ctx.settings.get("state_dir")
    if not state_dir:
        raise CommandError("E_RESOURCE_UNAVAILABLE", f"{op}: no state directory to keep the snapshot in")
    tx = shaper(state_dir, ctx.event, ctx.settings.get("confirm_timeout_s", 120.0))
    try:
        return tx.apply(plan, op, health=lambda: _reachable(gateway, ctx))
    except ShapingError as exc:
        raise CommandError("E_RESOURCE_UNAVAILABLE", f"{op}: {exc}", repr(exc.details)) from None


def _reachable(gateway: Optional[str], ctx: Context) -> Optional[str]:
    broker_up = ctx.settings.get("broker_connected")
    if broker_up is not None and not broker_up():
        return "the broker connection dropped after the change"
    if gateway is not None:
        report = echo(gateway, 0.2, 1.0, ctx)
        if report.received == 0:
            return f"the gateway {gateway} stopped answering after the change"
    return None


def ipr_stats(ifname: str) -> dict:
    from ..shaping.transaction import _ipr
    with _ipr() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        stats = ipr.get_links(index[0])[0].get_attr("IFLA_STATS64") if index else None
    if not stats:
        return {}
    packets = stats["tx_packets"] + stats["rx_packets"]
    bad = stats["tx_errors"] + stats["rx_errors"] + stats["tx_dropped"] + stats["rx_dropped"]
    return {"errors": stats["tx_errors"] + stats["rx_errors"], "dropped": stats["tx_dropped"] + stats["rx_dropped"],
            "packets": packets, "error_rate_percent": round(100 * bad / packets, 4) if packets else 0.0}


def _condition(now: dict, cap_bps: int) -> str:
    if now.get("tx_mbps") is None:
        return "unknown"
    fraction = now["tx_mbps"] * 1e6 / cap_bps
    return "loaded" if fraction >= LOADED_FRACTION else "idle" if fraction <= IDLE_FRACTION else "partly loaded"


def identify(state: dict, tree, cap_bps: int) -> list[dict]:
    from ..shaping.tcstate import decode_options
    issues = []
    latency = state["measurement"].get("latency_ms")
    if state["condition"] == "loaded" and latency and latency["p50"] >= 30:
        issues.append({"type": "bufferbloat", "severity": "high" if latency["p50"] >= 200 else "medium",
                       "details": f"gateway latency p50 {latency['p50']} ms, p95 {latency['p95']} ms while "
                                  f"{state['uplink']} sent {state['measurement']['tx_mbps']} Mbit/s"})
    past = state.get("history", {})
    if past.get("idle") and past.get("loaded") and past["loaded"]["p50"] - past["idle"]["p50"] >= 30:
        issues.append({"type": "bufferbloat", "severity": "medium",
                       "details": f"last hour: gateway latency p50 {past['idle']['p50']} ms idle, "
                                  f"{past['loaded']['p50']} ms over {past['loaded']['seconds']} loaded seconds"})
    rate = state["interface_errors"].get("error_rate_percent")
    if rate is not None and rate > 1.0:
        issues.append({"type": "high_error_rate", "severity": "high" if rate > 5 else "medium",
                       "details": f"{state['uplink']}: {rate} % of packets errored or dropped"})
    configured = tree.configured()
    if not configured:
        issues.append({"type": "no_queue_management", "severity": "medium",
                       "details": f"{state['uplink']} has only the kernel's default queue "
                                  f"({tree.root.kind if tree.root else 'none'}): nothing shapes or prioritises"})
    for o in configured:
        shaped = decode_options(o.what, o.kind, o.options).get("ceil_bps") if o.what == "class" else None
        if shaped and o.parent == 0xFFFFFFFF and not 0.8 * cap_bps <= shaped <= cap_bps:
            issues.append({"type": "shaper_far_from_capacity", "severity": "medium",
                           "details": f"existing shaper at {shaped / 1e6:.3f} Mbit/s, capacity {cap_bps / 1e6:.3f}"})
    return issues


def estimate(loaded: Optional[dict], plan) -> dict:
    model = ("queueing delay removed = measured latency under load - (idle latency + the leaf's target delay); "
             "throughput kept = shaped fraction of the capacity")
    out = {"model": model, "throughput_kept_fraction": plan.summary()["root"]["shaped_fraction"],
           "target_delay_ms": plan.target_delay_ms}
    if loaded is None:
        out.update(latency_reduction_ms=None, reason="no latency measured under load")
    else:
        out["latency_reduction_ms"] = round(max(0.0, loaded["p50"] - plan.target_delay_ms), 2)
        out["basis"] = {"loaded_p50_ms": loaded["p50"]}
    return out


# A dry run changes nothing: the privilege is checked in run() when dry_run is false.
SPEC = register(CommandSpec(op=OP, run=run, estimate_ms=estimate_ms, resource="shaping",
                            summary="measure the uplink and plan (or apply) a shaper that removes bufferbloat"))
