"""A shaping plan: the tc tree we want on the uplink, and why. Pure data, no side effects.

The tree is the classic one (sqm-scripts' simple.qos, LibreQoS): an HTB root shaping the uplink
just below its capacity so the queue forms here, where we choose what leaves first, instead of
in the modem's deep buffer; five classes (express, high, medium, low, bulk) by HTB priority;
u32 filters by DSCP, protocol, address and port; and a short queue at each leaf.
"""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field
from typing import Optional

from .tcstate import TC_H_ROOT, fmt_handle

ETH_P_IP = 0x0800
MTU = 1514                 # an Ethernet frame as the qdisc counts it (IP packet + 14 bytes)
GSO_MAX = 65536            # a TSO/GSO super-packet the stack may hand the qdisc as one skb
SHAPE_FRACTION = 0.95      # shaped rate / capacity; see README (the queue must form here)
TARGET_DELAY_MS = {"minimize_latency": 10.0, "maximize_throughput": 25.0, "default": 15.0}
MIN_LEAF_BYTES = 4 * MTU   # a leaf below four frames starves TCP of its ACK clock
SEGMENTER_RATE_FACTOR = 10  # the GSO-splitting tbf leaf runs at 10x its class: HTB stays the limiter

# Class layout: minor id, HTB priority (lower leaves first), share of the shaped rate guaranteed.
CLASSES = {
    "express": (0x10, 0, 0.10),
    "high": (0x20, 1, 0.30),
    "medium": (0x30, 2, 0.25),
    "low": (0x40, 3, 0.25),
    "bulk": (0x50, 4, 0.10),
}
DEFAULT_CLASS = "low"      # unclassified traffic: best effort, behind anything known to be interactive
EXPRESS_CEIL = 0.30        # a strict-priority class is capped, or a flood in it starves the rest

# The guide's profiles (max latency, minimum bandwidth) plus gaming and streaming; what matches them.
# Ports are the well-known ones of each kind of traffic; DSCP as RFC 4594 recommends.
APPLICATIONS = {
    "voip": {"class": "express", "max_latency_ms": 20, "min_kbps": 64, "dscp": (46,),
             "match": [("udp", "dport", 5060, 5061), ("udp", "dport", 10000, 20000),
                       ("udp", "sport", 10000, 20000)]},
    "video_conference": {"class": "high", "max_latency_ms": 50, "min_kbps": 2000, "dscp": (34, 36),
                         "match": [("udp", "dport", 3478, 3481), ("udp", "dport", 8801, 8810)]},
    "gaming": {"class": "high", "max_latency_ms": 30, "min_kbps": 500, "dscp": (32,),
               "match": [("udp", "dport", 3074, 3075), ("udp", "dport", 27015, 27030)]},
    "streaming": {"class": "medium", "max_latency_ms": 500, "min_kbps": 2000, "dscp": (26,),
                  "match": [("tcp", "dport", 1935, 1935)]},
    "web_browsing": {"class": "medium", "max_latency_ms": 200, "min_kbps": 128, "dscp": (),
                     "match": [("tcp", "dport", 80, 80), ("tcp", "dport", 443, 443), ("udp", "dport", 443, 443),
                               ("udp", "dport", 53, 53), ("tcp", "dport", 53, 53)]},
    "file_transfer": {"class": "bulk", "max_latency_ms": 1000, "min_kbps": 1000, "dscp": (8,),
                      "match": [("tcp", "dport", 20, 21), ("tcp", "dport", 873, 873), ("tcp", "dport", 445, 445)]},
}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
PROMOTE = {"medium": "high", "high": "high", "express": "express"}


class PlanError(ValueError):
    """The plan cannot be built on this kernel or from these arguments (says why)."""


@dataclass(frozen=True)
class Qdisc:
    kind: str
    handle: int
    parent: int
    params: tuple = ()  # (name, value) pairs, kind-specific

    def param(self, name, default=None):
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class HtbClass:
    classid: int
    parent: int
    rate_bps: int
    ceil_bps: int
    prio: int
    name: str


@dataclass(frozen=True)
class Filter:
    parent: int
    prio: int
    classid: int
    match: tuple  # ((byte offset, value, mask), ...) in the IP header
    why: str

    def words(self) -> list[tuple[int, int, int]]:
        """The match as aligned 32-bit words (offset, value, mask), as tc writes u32 keys."""
        words: dict[int, list[int]] = {}
        for offset, value, mask in self.match:
            word = words.setdefault(offset & ~3, [0, 0])
            shift = 8 * (3 - (offset & 3))
            word[0] |= value << shift
            word[1] |= mask << shift
        return [(off, v, m) for off, (v, m) in sorted(words.items())]

    def keys(self) -> list[str]:
        """pyroute2's u32 keys: 'value/mask+offset'."""
        return [f"0x{v:08x}/0x{m:08x}+{off}" for off, v, m in self.words()]


@dataclass
class InterfacePlan:
    ifname: str
    qdiscs: list[Qdisc] = field(default_factory=list)
    classes: list[HtbClass] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    redirect_to: Optional[str] = None  # arriving packets go to this ifb (ingress qdisc + mirred)
    create: Optional[str] = None       # the link kind to create when it is missing (ifb)


@dataclass
class Plan:
    interfaces: list[InterfacePlan]
    capacity_bps: int
    capacity_source: str
    shaped_bps: int
    target_delay_ms: float
    leaf: str
    leaf_reason: str
    ingress: dict
    reasons: list[str]
    time_window: str = "always"
    adaptive: Optional[dict] = None  # adaptive shaping's arguments (autorate.py), None: fixed rates

    def in_order(self) -> list[InterfacePlan]:
        """Links the plan creates (the ifb) first: the uplink's redirect to them goes in last."""
        return sorted(self.interfaces, key=lambda p: p.create is None)

    def summary(self) -> dict:
        main = self.interfaces[0]
        return {
            "interface": main.ifname,
            "root": {"qdisc": "htb", "shaped_rate_mbps": round(self.shaped_bps / 1e6, 3),
                     "capacity_mbps": round(self.capacity_bps / 1e6, 3), "capacity_source": self.capacity_source,
                     "shaped_fraction": SHAPE_FRACTION},
            "classes": [{"name": c.name, "classid": fmt_handle(c.classid), "prio": c.prio,
                         "rate_mbps": round(c.rate_bps / 1e6, 3), "ceil_mbps": round(c.ceil_bps / 1e6, 3),
                         "default": c.name == DEFAULT_CLASS} for c in main.classes if c.name != "root"],
            "leaf_queue": {"kind": self.leaf, "target_delay_ms": self.target_delay_ms, "why": self.leaf_reason,
                           "limits_bytes": {fmt_handle(q.parent): q.param("limit") for q in main.qdiscs
                                            if q.parent != TC_H_ROOT}},
            "filters": [{"prio": f.prio, "class": fmt_handle(f.classid), "why": f.why} for f in main.filters],
            "ingress": self.ingress,
            "time_window": self.time_window,
            "adaptive": self.adaptive,
            "reasons": self.reasons,
        }


# ---- u32 matches on the IPv4 header (IHL 5, as tc's `match ip dport`) -----------------------------

def _u16(offset: int, value: int, mask: int = 0xFFFF) -> list[tuple]:
    pairs = [(offset, value >> 8, mask >> 8), (offset + 1, value & 0xFF, mask & 0xFF)]
    return [(off, v, m) for off, v, m in pairs if m]


def match_protocol(name: str) -> list[tuple]:
    return [(9, PROTOCOLS[name], 0xFF)]


def match_dscp(dscp: int) -> list[tuple]:
    return [(1, dscp << 2, 0xFC)]


def match_address(which: str, address: str) -> list[tuple]:
    start = 12 if which == "src" else 16
    octets = [int(part) for part in address.split(".")]
    return [(start + i, octets[i], 0xFF) for i in range(4)]


def port_blocks(low: int, high: int) -> list[tuple[int, int]]:
    """Cover low..high with aligned (value, mask) blocks, as u32 can only match masks."""
    out = []
    while low <= high:
        size = low & -low if low else 1 << 16
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


INBOUND = {"sport": "dport", "dport": "sport", "src": "dst", "dst": "src"}


def match_ports(direction: str, low: int, high: int) -> list[list[tuple]]:
    offset = 20 if direction == "sport" else 22
    # IHL must be 5 for the fixed port offset to be right (no IP options).
    return [[(0, 0x45, 0xFF)] + _u16(offset, value, mask) for value, mask in port_blocks(low, high)]


# ---- building ------------------------------------------------------------------------------------

def choose_leaf(capabilities: dict) -> tuple[str, str]:
    qdiscs = capabilities["qdiscs"]
    if qdiscs.get("fq_codel"):
        return "fq_codel", "fq_codel: flow isolation and a delay target per class (sqm-scripts' leaf)"
    if qdiscs.get("cake"):
        return "cake", "cake (unlimited, besteffort) as leaf: flow isolation and AQM; fq_codel absent"
    if qdiscs.get("sfq"):
        return "sfq", "sfq: flow isolation (no AQM); fq_codel and cake absent"
    if qdiscs.get("tbf") and qdiscs.get("bfifo"):
        return "tbf", ("fq_codel, cake and sfq absent: a byte-limited fifo sized to the target delay, inside a tbf "
                       f"at {SEGMENTER_RATE_FACTOR}x the class rate that only splits GSO super-packets (a 64 kB "
                       "super-packet against a small byte limit starves TCP: measured 0.023 of the link)")
    if qdiscs.get("bfifo"):
        return "bfifo", "only fifos: a byte-limited fifo no smaller than a GSO super-packet plus a frame"
    if qdiscs.get("pfifo"):
        return "pfifo", "only pfifo: a packet-limited fifo sized to the target delay in full frames"
    raise PlanError("this kernel has no leaf queue the plan can use (no fq_codel, cake, sfq, tbf, bfifo or pfifo)")


def _leaf(kind: str, handle: int, parent: int, ceil_bps: int, target_ms: float) -> Qdisc:
    target_bytes = max(MIN_LEAF_BYTES, int(ceil_bps / 8 * target_ms / 1000))
    if kind == "fq_codel":
        return Qdisc(kind, handle, parent, (("target_us", int(target_ms * 1000 / 3)), ("limit", 1000)))
    if kind == "cake":
        return Qdisc(kind, handle, parent, (("unlimited", True),))
    if kind == "sfq":
        return Qdisc(kind, handle, parent, (("limit", max(8, target_bytes // MTU)),))
    if kind == "tbf":
        return Qdisc(kind, handle, parent, (("rate_bps", ceil_bps * SEGMENTER_RATE_FACTOR),
                                            ("burst", 2 * MTU + 100), ("limit", target_bytes)))
    if kind == "bfifo":
        return Qdisc(kind, handle, parent, (("limit", max(target_bytes, GSO_MAX + MTU)),))
    return Qdisc(kind, handle, parent, (("limit", max(4, target_bytes // MTU)),))


def _app_filters(parent: int, apps: dict[str, str], classids: dict[str, int], inbound: bool = False
                 ) -> list[Filter]:
    """ICMP first (tiny, and what people measure with), then DSCP marks, then ports (on the
    ingress ifb the remote end's port is the source port)."""
    out = [Filter(parent, 1, classids["express"], tuple(match_protocol("icmp")), "icmp -> express")]
    for app, cls in apps.items():
        for dscp in APPLICATIONS[app]["dscp"]:
            out.append(Filter(parent, 2, classids[cls], tuple(match_dscp(dscp)), f"{app}: dscp {dscp} -> {cls}"))
    for app, cls in apps.items():
        for proto, direction, low, high in APPLICATIONS[app]["match"]:
            direction = INBOUND[direction] if inbound else direction
            for words in match_ports(direction, low, high):
                out.append(Filter(parent, 3, classids[cls], tuple(match_protocol(proto) + words),
                                  f"{app}: {proto} {direction} {low}-{high} -> {cls}"))
    return out


def _classes(shaped: int, goals: list[str], min_rates: dict[str, int]) -> list[HtbClass]:
    root = HtbClass(0x10001, 0x10000, shaped, shaped, 0, "root")
    shares = {name: share for name, (_minor, _prio, share) in CLASSES.items()}
    if "improve_reliability" in goals:
        shares["express"], shares["high"], shares["low"] = 0.15, 0.35, 0.15
    out = [root]
    for name, (minor, prio, _share) in CLASSES.items():
        rate = max(int(shaped * shares[name]), min_rates.get(name, 0))
        ceil = int(shaped * EXPRESS_CEIL) if name == "express" else shaped
        rate = min(rate, ceil)
        out.append(HtbClass(0x10000 | minor, 0x10001, rate, ceil, prio, name))
    total = sum(c.rate_bps for c in out[1:])
    if total > shaped:  # guarantees may not promise more than the root has
        out = [out[0]] + [HtbClass(c.classid, c.parent, int(c.rate_bps * shaped / total), c.ceil_bps, c.prio,
                                   c.name) for c in out[1:]]
    return out


def _tree(ifname: str, shaped: int, target_ms: float, leaf: str, goals: list[str], filters_for,
          min_rates: dict[str, int]) -> InterfacePlan:
    plan = InterfacePlan(ifname)
    plan.qdiscs.append(Qdisc("htb", 0x10000, TC_H_ROOT, (("default", CLASSES[DEFAULT_CLASS][0]), ("r2q", 10))))
    plan.classes = _classes(shaped, goals, min_rates)
    for cls in plan.classes[1:]:
        minor = cls.classid & 0xFFFF
        plan.qdiscs.append(_leaf(leaf, minor << 16, cls.classid, cls.ceil_bps, target_ms))
    classids = {c.name: c.classid for c in plan.classes}
    plan.filters = filters_for(0x10000, classids)
    return plan


def ingress_missing(capabilities: dict) -> list[str]:
    return [name for name, present in (("ifb", capabilities["links"].get("ifb")),
                                       ("ingress qdisc", capabilities["qdiscs"].get("ingress")),
                                       ("mirred action", capabilities["actions"].get("mirred")),
                                       ("u32", capabilities["classifiers"].get("u32")))
            if not present]


def ifb_name(uplink: str) -> str:
    return f"ifb4{uplink}"[:15]  # sqm-scripts' naming


def target_delay(goals: list[str]) -> float:
    if "minimize_latency" in goals:
        return TARGET_DELAY_MS["minimize_latency"]
    if "maximize_throughput" in goals:
        return TARGET_DELAY_MS["maximize_throughput"]
    return TARGET_DELAY_MS["default"]


def build_auto(uplink: str, capacity_bps: int, capacity_source: str, capabilities: dict, goals: list[str],
               priority_apps: list[str], time_window: str = "always") -> Plan:
    """qos_auto_optimization's tree: application profiles, promoted by `priority_apps`."""
    leaf, leaf_reason = choose_leaf(capabilities)
    shaped = int(capacity_bps * SHAPE_FRACTION)
    target_ms = target_delay(goals)
    apps = {app: profile["class"] for app, profile in APPLICATIONS.items()}
    for app in priority_apps:
        apps[app] = "express" if app == "voip" else PROMOTE.get(apps[app], "high")
    min_rates: dict[str, int] = {}
    for app, cls in apps.items():
        if app in priority_apps:
            min_rates[cls] = min_rates.get(cls, 0) + APPLICATIONS[app]["min_kbps"] * 1000
    reasons = [f"shape {uplink} egress at {SHAPE_FRACTION:.0%} of {capacity_bps / 1e6:.3f} Mbit/s "
               f"({capacity_source}) so the queue forms here, not in the modem's buffer",
               f"leaf queues hold {target_ms:g} ms at their class's ceiling ({leaf})"]
    reasons += [f"{app} promoted to {apps[app]} (priority_applications)" for app in priority_apps]
    tree = _tree(uplink, shaped, target_ms, leaf, goals, lambda parent, ids: _app_filters(parent, apps, ids),
                 min_rates)
    interfaces = [tree]
    missing = ingress_missing(capabilities)
    if missing:
        ingress = {"shaped": False, "reason": "ingress shaping redirects arriving packets to an ifb with a mirred "
                                              f"action; this kernel lacks: {', '.join(missing)}"}
    else:
        ifb = ifb_name(uplink)
        inbound = _tree(ifb, shaped, target_ms, leaf, goals,
                        lambda parent, ids: _app_filters(parent, apps, ids, inbound=True), min_rates)
        inbound.create = "ifb"
        tree.redirect_to = ifb
        interfaces.append(inbound)
        ingress = {"shaped": True, "ifb": ifb, "shaped_rate_mbps": round(shaped / 1e6, 3),
                   "reason": f"arriving packets on {uplink} are redirected (mirred) to {ifb} and shaped there like "
                             "the egress; the one capacity figure is used for both directions"}
    return Plan(interfaces, capacity_bps, capacity_source, shaped, target_ms, leaf, leaf_reason,
                ingress, reasons, time_window)


# ---- qos_config: policies and rules ----------------------------------------------------------------

POLICIES = {
    "gaming": {"promote": ["gaming", "voip"], "goals": ["minimize_latency"]},
    "streaming": {"promote": ["streaming", "video_conference"], "goals": ["maximize_throughput"]},
    "work": {"promote": ["video_conference", "voip"], "goals": ["improve_reliability"]},
    "balanced": {"promote": [], "goals": []},
    "custom": {"promote": [], "goals": []},
}
RULE_CLASS = {"high": "high", "medium": "medium", "low": "bulk"}


def rule_matches(rule: dict, device_addresses: dict[str, list[str]], inbound: bool = False) -> list[list[tuple]]:
    """The u32 match alternatives of one qos_config rule (a port range gives one per block,
    a device one per current address); `inbound` mirrors addresses and ports for the ifb."""
    match = rule["match"]
    src, dst, dport = ("dst", "src", "sport") if inbound else ("src", "dst", "dport")
    base: list[tuple] = []
    proto = match.get("protocol", "any")
    if proto != "any":
        base += match_protocol(proto)
    if "src_ip" in match:
        base += match_address(src, match["src_ip"])
    if "dst_ip" in match:
        base += match_address(dst, match["dst_ip"])
    alternatives = [base]
    if "device_mac" in match:
        addresses = device_addresses.get(match["device_mac"].lower(), [])
        alternatives = [base + match_address(src, address) for address in addresses]
    if "port_range" in match:
        low, _, high = match["port_range"].partition("-")
        blocks = match_ports(dport, int(low), int(high or low))
        alternatives = [alt + block for alt in alternatives for block in blocks]
    return alternatives


def build_config(uplink: str, capacity_bps: int, capacity_source: str, capabilities: dict, policy: str,
                 rules: list[dict], device_addresses: dict[str, list[str]]) -> Plan:
    """qos_config's tree: the policy's promotions, then each rule as filters (rules first)."""
    settings = POLICIES[policy]
    plan = build_auto(uplink, capacity_bps, capacity_source, capabilities, settings["goals"],
                      [app for app in settings["promote"]])
    for tree in plan.interfaces:
        inbound = tree.create is not None
        classids = {c.name: c.classid for c in tree.classes}
        rule_filters = []
        for rule in rules:
            cls = RULE_CLASS[rule["priority"]]
            for words in rule_matches(rule, device_addresses, inbound):
                if not words:
                    raise PlanError(f"rule {rule['name']!r}: matches every packet; give it a protocol, port or "
                                    "address")
                rule_filters.append(Filter(0x10000, 1, classids[cls], tuple(words), f"rule {rule['name']} -> {cls}"))
            limit = rule.get("bandwidth_limit")
            guarantee = rule.get("bandwidth_guarantee")
            if limit or guarantee:
                if not inbound:
                    plan.reasons.append(f"rule {rule['name']}: {cls} class "
                                        + (f"ceiling {limit} Mbit/s " if limit else "")
                                        + (f"guarantee {guarantee} Mbit/s" if guarantee else ""))
                tree.classes = [_bounded(c, limit, guarantee, plan.shaped_bps) if c.name == cls else c
                                for c in tree.classes]
        # Rules go before the profiles (prio 1 is looked at first).
        tree.filters = rule_filters + [Filter(f.parent, f.prio + 1, f.classid, f.match, f.why) for f in tree.filters]
    plan.reasons.insert(0, f"policy {policy}" + (f": promotes {', '.join(settings['promote'])}"
                                                 if settings["promote"] else ""))
    return plan


def _bounded(cls: HtbClass, limit_mbps: Optional[int], guarantee_mbps: Optional[int], shaped: int) -> HtbClass:
    ceil = min(cls.ceil_bps, limit_mbps * 1_000_000) if limit_mbps else cls.ceil_bps
    rate = min(max(cls.rate_bps, guarantee_mbps * 1_000_000 if guarantee_mbps else 0), shaped)
    return HtbClass(cls.classid, cls.parent, min(rate, ceil), ceil, cls.prio, cls.name)


def protocol_info(prio: int) -> int:
    """tcmsg.info of an IPv4 filter at `prio`: priority << 16 | htons(ETH_P_IP)."""
    return (prio << 16) | struct.unpack("=H", struct.pack("!H", ETH_P_IP))[0]


# ---- persistence (the confirmed plan is re-applied after a link flap or a restart) ----------------

def to_json(p: Plan) -> dict:
    return asdict(p)


def from_json(data: dict) -> Plan:
    interfaces = [InterfacePlan(
        i["ifname"],
        [Qdisc(q["kind"], q["handle"], q["parent"], tuple(tuple(kv) for kv in q["params"])) for q in i["qdiscs"]],
        [HtbClass(**c) for c in i["classes"]],
        [Filter(f["parent"], f["prio"], f["classid"], tuple(tuple(m) for m in f["match"]), f["why"])
         for f in i["filters"]], i["redirect_to"], i["create"]) for i in data["interfaces"]]
    return Plan(interfaces, **{k: v for k, v in data.items() if k != "interfaces"})


# ---- time windows (local time) ---------------------------------------------------------------------

WINDOWS = {"business_hours": ("09:00-18:00", True), "peak_hours": ("19:00-23:00", False),
           "off_peak": ("23:00-07:00", False)}


def in_window(window: str, hours: dict, when) -> bool:
    """Whether `when` (a local datetime) is inside `window`; hours {name: "HH:MM-HH:MM"} override
    the defaults. business_hours are Monday to Friday; a span past midnight wraps."""
    if window == "always":
        return True
    default, weekdays_only = WINDOWS[window]
    span = hours.get(window, default)
    start, _, end = span.partition("-")
    minute = when.hour * 60 + when.minute
    first = int(start[:2]) * 60 + int(start[3:5])
    last = int(end[:2]) * 60 + int(end[3:5])
    inside = first <= minute < last if first <= last else (minute >= first or minute < last)
    return inside and (not weekdays_only or when.weekday() < 5)
