"""qos_config: a policy (gaming, streaming, work, balanced, custom) and rules become the same HTB
tree as qos_auto_optimization, applied as a pending transaction; `enable: false` restores what
was on the uplink before the agent changed it.

A rule's `device_mac` is resolved to the device's current IPv4 addresses through the kernel's
neighbour table (a device the router has not seen is an error naming it, not a rule that
silently matches nothing).
"""
from __future__ import annotations

from ..protocol.errors import CommandError
from .auto_optimization import apply_plan, capacity, require_changes_allowed, uplink, with_adaptive
from .base import CommandSpec, Context, register

OP = "qos_config"
CONFIRM_OP = "qos_shaping_confirm"


def estimate_ms(args: dict) -> int:
    return 15000


def neighbour_addresses() -> dict[str, list[str]]:
    """MAC (lower case) -> IPv4 addresses the neighbour table holds for it (reachable or stale)."""
    from ..shaping.transaction import _ipr
    out: dict[str, list[str]] = {}
    with _ipr() as ipr:
        for entry in ipr.get_neighbours(family=2):
            mac, address = entry.get_attr("NDA_LLADDR"), entry.get_attr("NDA_DST")
            if mac and address and entry["state"] not in (0x20, 0x01):  # not FAILED / INCOMPLETE
                out.setdefault(mac.lower(), []).append(address)
    return out


def run(args: dict, ctx: Context) -> dict:
    from ..shaping import capabilities, plan as shaping_plan, render
    from ..shaping.transaction import _ipr, shaper
    require_changes_allowed(OP, ctx)
    state_dir = ctx.settings.get("state_dir")
    if not args["enable"]:
        if not state_dir:
            raise CommandError("E_RESOURCE_UNAVAILABLE", f"{OP}: no state directory")
        tx = shaper(state_dir, ctx.event)
        try:
            return {"enabled": False, "revert": tx.revert("qos_config enable: false")}
        except LookupError as exc:
            return {"enabled": False, "revert": None, "note": str(exc)}
    rules = args.get("rules", [])
    if args["policy"] == "custom" and not rules:
        raise CommandError("E_INVALID_COMMAND", "args.rules: policy custom needs at least one rule")
    ifname, gateway = uplink()
    cap_bps, cap_source = _capacity(ifname, state_dir)
    devices = neighbour_addresses() if any("device_mac" in r["match"] for r in rules) else {}
    for i, rule in enumerate(rules):
        mac = rule["match"].get("device_mac")
        if mac and not devices.get(mac.lower()):
            raise CommandError("E_RESOURCE_UNAVAILABLE",
                               f"args.rules[{i}].match.device_mac: {mac} is not in the neighbour table")
    with _ipr() as ipr:
        caps = capabilities.capabilities(ipr)
    try:
        plan = shaping_plan.build_config(ifname, cap_bps, cap_source, caps, args["policy"], rules, devices)
    except shaping_plan.PlanError as exc:
        raise CommandError("E_INVALID_COMMAND", str(exc)) from None
    with_adaptive(plan, args)
    return {"enabled": True, "policy": args["policy"], "plan": plan.summary(),
            "resolved_devices": {mac: devices[mac] for mac in devices
                                 if any(r["match"].get("device_mac", "").lower() == mac for r in rules)},
            "tc_commands": [line for p in plan.in_order() for line in render.plan_lines(p)],
            "execution_result": apply_plan(plan, OP, ctx, gateway)}


def _capacity(ifname: str, state_dir) -> tuple[int, str]:
    """The capacity the last applied plan used (its source said there), else the link speed."""
    from ..shaping.transaction import read_record
    record = read_record(state_dir) if state_dir else None
    last_plan = (record or {}).get("plan", {})
    root = last_plan.get("root")
    if root and last_plan.get("interface") == ifname:
        return int(root["capacity_mbps"] * 1e6), f"the previous plan's ({root['capacity_source']})"
    try:
        return capacity({}, ifname)
    except CommandError:
        raise CommandError("E_INVALID_COMMAND", f"{OP}: the capacity of {ifname} is unknown (no link speed): run "
                           "qos_auto_optimization with constraints.max_bandwidth_mbps first") from None


def confirm(args: dict, ctx: Context) -> dict:
    from ..shaping.transaction import shaper
    state_dir = ctx.settings.get("state_dir")
    if not state_dir:
        raise CommandError("E_RESOURCE_UNAVAILABLE", f"{CONFIRM_OP}: no state directory")
    tx = shaper(state_dir, ctx.event)
    try:
        if args["revert"]:
            return tx.revert(f"{CONFIRM_OP} revert: true")
        return tx.confirm(args.get("transaction"))
    except LookupError as exc:
        raise CommandError("E_RESOURCE_UNAVAILABLE", f"{CONFIRM_OP}: {exc}") from None


SPEC = register(CommandSpec(op=OP, run=run, estimate_ms=estimate_ms, changes_router=True, resource="shaping",
                            summary="apply a QoS policy and rules to the uplink (pending until confirmed)"))
CONFIRM_SPEC = register(CommandSpec(op=CONFIRM_OP, run=confirm, estimate_ms=lambda _a: 2000, changes_router=True,
                                    summary="confirm the pending shaping change (or revert it at once)"))
