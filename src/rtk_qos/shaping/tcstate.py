"""The tc state of interfaces as the kernel reports it: qdiscs, classes and filters.

Read through pyroute2's dumps, but decoded here from the raw netlink bytes: the snapshot
keeps each object's `TCA_OPTIONS` exactly as the kernel dumped it, so a revert can hand the
same bytes back (any qdisc kind, not only the ones we know), and the read-back compares
what the kernel holds byte for byte. pyroute2's own decoders are not used for that: its u32
selector decoder misreads the keys (it starts them 4 bytes early).

Handles are the kernel's 32-bit `major:minor` integers; `fmt_handle` prints them as tc does.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Optional

TC_H_ROOT = 0xFFFFFFFF
# Qdiscs whose classes someone creates; the classes of the others (tbf's 1, prio's bands,
# fq_codel's and cake's per-flow entries) come with the qdisc and are not state of their own.
CLASSES_CREATED = {"htb", "hfsc", "drr", "qfq", "cbq"}
TC_H_INGRESS = 0xFFFFFFF1
NLMSG_HDR = 16
TCMSG_LEN = 20
TCA_KIND, TCA_OPTIONS, TCA_STATS2 = 1, 2, 7
TCA_STATS_BASIC, TCA_STATS_QUEUE, TCA_STATS_BASIC_HW = 1, 3, 7
# u32: attributes that are status, not configuration (dropped from snapshots and comparisons).
TCA_U32_HASH, TCA_U32_PCNT, TCA_U32_FLAGS = 2, 9, 11
TCA_CLS_FLAGS_CONFIG = 0x3  # skip_hw | skip_sw; not_in_hw/in_hw are the kernel's report
# htb qdisc: tc_htb_glob.direct_pkts is a counter inside the options, and the version is
# dumped whole (0x30011) while a request must give its major (3).
TCA_HTB_INIT = 2
HTB_DIRECT_PKTS_OFFSET = 16
HTB_VERSION_REQUEST = 3


def fmt_handle(handle: int) -> str:
    if handle == TC_H_ROOT:
        return "root"
    if handle == TC_H_INGRESS:
        return "ingress"
    major, minor = handle >> 16, handle & 0xFFFF
    return f"{major:x}:{minor:x}" if minor else f"{major:x}:"


def parse_handle(text: str) -> int:
    """'1:10' -> 0x10010, '1:' -> 0x10000, 'root' -> TC_H_ROOT (tc's notation, hex fields)."""
    if text == "root":
        return TC_H_ROOT
    if text == "ingress":
        return TC_H_INGRESS
    major, _, minor = text.partition(":")
    return (int(major or "0", 16) << 16) | int(minor or "0", 16)


def nla_iter(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in `data` (nested flag bits cleared)."""
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        yield kind & 0x3FFF, data[pos + 4:pos + length]
        pos += (length + 3) & ~3


def nla_pack(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


@dataclass(frozen=True)
class TcObject:
    """One qdisc, class or filter. `options` is the kernel's TCA_OPTIONS payload, normalised
    (counters zeroed, status attributes dropped) so two reads of the same configuration agree."""
    what: str          # qdisc, class, filter
    kind: str          # htb, bfifo, u32, ...
    handle: int
    parent: int
    info: int = 0      # filters: priority << 16 | protocol (network order, as in tcmsg)
    options: bytes = b""

    @property
    def key(self) -> tuple:
        return (self.what, self.handle, self.parent, self.info)

    @property
    def prio(self) -> int:
        return self.info >> 16

    @property
    def protocol(self) -> int:
        return struct.unpack("!H", struct.pack("=H", self.info & 0xFFFF))[0]

    def as_json(self) -> dict:
        return {"what": self.what, "kind": self.kind, "handle": self.handle, "parent": self.parent,
                "info": self.info, "options": self.options.hex()}

    @classmethod
    def from_json(cls, data: dict) -> "TcObject":
        return cls(data["what"], data["kind"], data["handle"], data["parent"], data["info"],
                   bytes.fromhex(data["options"]))

    def describe(self) -> dict:
        """A readable form: what tc would show."""
        out = {"type": self.what, "kind": self.kind, "parent": fmt_handle(self.parent)}
        if self.what == "filter":
            out["prio"] = self.prio
        elif self.handle:
            out["handle"] = fmt_handle(self.handle)
        out.update(decode_options(self.what, self.kind, self.options))
        return out


@dataclass
class Counters:
    bytes: int = 0
    packets: int = 0
    drops: int = 0
    overlimits: int = 0
    backlog: int = 0
    qlen: int = 0


@dataclass
class TcTree:
    ifname: str
    ifindex: int
    objects: list[TcObject] = field(default_factory=list)
    counters: dict[tuple, Counters] = field(default_factory=dict)

    def of(self, what: str) -> list[TcObject]:
        return [o for o in self.objects if o.what == what]

    @property
    def root(self) -> Optional[TcObject]:
        return next((o for o in self.objects if o.what == "qdisc" and o.parent == TC_H_ROOT), None)

    def configured(self) -> list[TcObject]:
        """The objects someone configured: the kernel's own defaults (handle 0) left out."""
        return [o for o in self.objects if not (o.what == "qdisc" and o.handle == 0)]

    def signature(self) -> list[tuple]:
        return sorted((o.key, o.kind, o.options) for o in self.objects)

    def as_json(self) -> dict:
        return {"ifname": self.ifname, "objects": [o.as_json() for o in self.objects]}

    def describe(self) -> list[dict]:
        return [o.describe() for o in self.objects]


def _message_bytes(msg) -> bytes:
    return bytes(msg.data[msg.offset:msg.offset + msg["header"]["length"]])


def _normalise(what: str, kind: str, options: bytes) -> bytes:
    if kind == "u32" and what == "filter":
        out = b""
        for attr, payload in nla_iter(options):
            if attr == TCA_U32_PCNT:
                continue
            if attr == TCA_U32_FLAGS:
                payload = struct.pack("=I", struct.unpack("=I", payload[:4])[0] & TCA_CLS_FLAGS_CONFIG)
            out += nla_pack(attr, payload)
        return out
    if kind == "htb" and what == "qdisc":
        out = b""
        for attr, payload in nla_iter(options):
            if attr == TCA_HTB_INIT and len(payload) >= HTB_DIRECT_PKTS_OFFSET + 4:
                payload = (struct.pack("=I", HTB_VERSION_REQUEST) + payload[4:HTB_DIRECT_PKTS_OFFSET] + b"\0\0\0\0"
                           + payload[HTB_DIRECT_PKTS_OFFSET + 4:])
            out += nla_pack(attr, payload)
        return out
    return options


def parse_message(what: str, raw: bytes) -> tuple[Optional[TcObject], Optional[Counters], int]:
    """A dumped RTM_NEW{QDISC,TCLASS,TFILTER} message -> (object, counters, ifindex)."""
    _family, ifindex, handle, parent, info = struct.unpack_from("=B3xiIII", raw, NLMSG_HDR)
    kind, options, counters, has_options = "", b"", None, False
    for attr, payload in nla_iter(raw[NLMSG_HDR + TCMSG_LEN:]):
        if attr == TCA_KIND:
            kind = payload.rstrip(b"\0").decode()
        elif attr == TCA_OPTIONS:
            options, has_options = payload, True
        elif attr == TCA_STATS2:
            counters = _counters(payload)
    if what == "filter" and not has_options and handle == 0:
        return None, None, ifindex  # the classifier instance itself (one per prio), not a filter
    return TcObject(what, kind, handle, parent, info if what == "filter" else 0,
                    _normalise(what, kind, options)), counters, ifindex


def _counters(stats2: bytes) -> Counters:
    c = Counters()
    for attr, payload in nla_iter(stats2):
        if attr == TCA_STATS_BASIC and len(payload) >= 12:
            c.bytes, c.packets = struct.unpack_from("=QI", payload)
        elif attr == TCA_STATS_QUEUE and len(payload) >= 20:
            c.qlen, c.backlog, c.drops, _requeues, c.overlimits = struct.unpack_from("=IIIII", payload)
    return c


def read(ipr, ifname: str) -> TcTree:
    """Everything tc shows on `ifname`: qdiscs, classes, and the filters of each qdisc and class."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(ifname)
    ifindex = found[0]
    tree = TcTree(ifname, ifindex)

    def take(what, messages):
        for msg in messages:
            obj, counters, index = parse_message(what, _message_bytes(msg))
            if obj is None or index != ifindex or (what == "class" and obj.kind not in CLASSES_CREATED):
                continue
            tree.objects.append(obj)
            if counters is not None:
                tree.counters[obj.key] = counters

    take("qdisc", ipr.get_qdiscs(index=ifindex))
    take("class", ipr.get_classes(index=ifindex))
    # Filters hang off qdiscs (and, rarely, classes): dump each possible parent.
    parents = sorted({o.handle for o in tree.objects if o.what in ("qdisc", "class") and o.handle}
                     | ({TC_H_INGRESS & 0xFFFF0000} if any(o.kind in ("ingress", "clsact") for o in tree.objects)
                        else set()))
    for parent in parents:
        take("filter", ipr.get_filters(index=ifindex, parent=parent))
    return tree


# ---- decoding options for people and for the diff ------------------------------------------------

def _ratespec(data: bytes, offset: int) -> int:
    """tc_ratespec.rate (bytes/s, 32-bit)."""
    return struct.unpack_from("=BBHhHI", data, offset)[5]


def u32_selector(options: bytes) -> dict:
    """A u32 filter's configuration: keys as {byte offset: (value, mask)}, classid, hash table."""
    out: dict = {"bytes": {}, "classid": None, "divisor": None, "hash": None}
    for attr, payload in nla_iter(options):
        if attr == 5:  # TCA_U32_SEL
            nkeys = payload[2]
            for k in range(nkeys):
                # tc_u32_key: mask and value in network order, the offset in host order.
                mask, value = struct.unpack_from("!II", payload, 16 + 16 * k)
                offset = struct.unpack_from("=i", payload, 24 + 16 * k)[0]
                for b in range(4):
                    bmask = (mask >> (24 - 8 * b)) & 0xFF
                    if bmask:
                        out["bytes"][offset + b] = ((value >> (24 - 8 * b)) & 0xFF, bmask)
        elif attr == 1:
            out["classid"] = struct.unpack("=I", payload[:4])[0]
        elif attr == 4:
            out["divisor"] = struct.unpack("=I", payload[:4])[0]
        elif attr == TCA_U32_HASH:
            out["hash"] = struct.unpack("=I", payload[:4])[0]
    return out


def decode_options(what: str, kind: str, options: bytes) -> dict:
    """The parameters that matter, by kind; unknown kinds give their size."""
    attrs = dict(nla_iter(options)) if kind not in ("pfifo", "bfifo") else {}
    if kind in ("pfifo", "bfifo") and len(options) >= 4:
        return {"limit": struct.unpack_from("=I", options)[0]}
    if kind == "htb" and what == "class" and 1 in attrs:
        parms = attrs[1]
        rate, ceil = _ratespec(parms, 0), _ratespec(parms, 12)
        if 6 in attrs:
            rate = struct.unpack("=Q", attrs[6])[0]
        if 7 in attrs:
            ceil = struct.unpack("=Q", attrs[7])[0]
        _buffer, _cbuffer, quantum, _level, prio = struct.unpack_from("=IIIII", parms, 24)
        return {"rate_bps": rate * 8, "ceil_bps": ceil * 8, "prio": prio, "quantum": quantum}
    if kind == "htb" and what == "qdisc" and TCA_HTB_INIT in attrs:
        _version, r2q, defcls = struct.unpack_from("=III", attrs[TCA_HTB_INIT])
        return {"default": f"{defcls:x}", "r2q": r2q}
    if kind == "tbf" and 1 in attrs:
        parms = attrs[1]
        rate = _ratespec(parms, 0)
        if 4 in attrs:
            rate = struct.unpack("=Q", attrs[4])[0]
        limit, _buffer, mtu = struct.unpack_from("=III", parms, 24)
        out = {"rate_bps": rate * 8, "limit": limit}
        if 6 in attrs:  # TCA_TBF_BURST
            out["burst"] = struct.unpack("=I", attrs[6])[0]
        return out
    if kind == "u32" and what == "filter":
        sel = u32_selector(options)
        if sel["divisor"] is not None:
            return {"hash_table": True, "divisor": sel["divisor"]}
        return {"match": {str(off): f"{v:02x}/{m:02x}" for off, (v, m) in sorted(sel["bytes"].items())},
                "flowid": fmt_handle(sel["classid"]) if sel["classid"] else None}
    return {"options_bytes": len(options)} if options else {}
