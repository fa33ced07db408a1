"""Argument facts of the RTK MQTT v1 QoS commands, declared once.

The same tables validate a request, fill defaults, and render the CLI help and
README, so the schema, the code and the documentation cannot disagree. The
facts come from ../shared/protocol/schemas (draft-07); where the schema leaves
a value unbounded but the device cannot honour it (an interface name longer
than the kernel's IFNAMSIZ), the table adds the bound and says so in `doc`.
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import CommandError

# Strings from the wire are echoed in error messages: keep those short.
_ECHO_MAX = 40


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO_MAX else text[: _ECHO_MAX - 3] + "..."


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


class ArgError(CommandError):
    """An argument is wrong: names the path, the value and what was expected."""

    def __init__(self, path: str, message: str):
        super().__init__("E_INVALID_COMMAND", f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class Spec:
    doc: str = ""
    required: bool = False
    default: Any = None

    def check(self, value: Any, path: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _within(value, low, high, path: str):
    if low is not None and value < low:
        raise ArgError(path, f"{value} is below the minimum {low}")
    if high is not None and value > high:
        raise ArgError(path, f"{value} is above the maximum {high}")
    return value


@dataclass(frozen=True)
class Int(Spec):
    min: int | None = None
    max: int | None = None

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            # JSON has one number type: 10.0 is an integer to a schema validator.
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ArgError(path, f"expected an integer, got {_type_name(value)} {_echo(value)}")
        return _within(value, self.min, self.max, path)

    def describe(self):
        lo = "" if self.min is None else str(self.min)
        hi = "" if self.max is None else str(self.max)
        return f"integer {lo}-{hi}" if self.max is not None else f"integer >= {lo}"


@dataclass(frozen=True)
class Num(Spec):
    min: float | None = None
    max: float | None = None

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgError(path, f"expected a number, got {_type_name(value)} {_echo(value)}")
        if not math.isfinite(value):
            raise ArgError(path, f"expected a finite number, got {value}")
        return _within(value, self.min, self.max, path)

    def describe(self):
        if self.max is not None:
            return f"number {self.min}-{self.max}"
        return "number" if self.min is None else f"number >= {self.min}"


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value, path):
        if not isinstance(value, bool):
            raise ArgError(path, f"expected a boolean, got {_type_name(value)} {_echo(value)}")
        return value

    def describe(self):
        return "boolean"


@dataclass(frozen=True)
class Str(Spec):
    max_len: int = 256
    pattern: str | None = None
    pattern_doc: str = ""
    nullable: bool = False

    def check(self, value, path):
        if value is None and self.nullable:
            return None
        if not isinstance(value, str):
            raise ArgError(path, f"expected a string, got {_type_name(value)} {_echo(value)}")
        if not value:
            raise ArgError(path, "must not be empty")
        if len(value) > self.max_len:
            raise ArgError(path, f"is {len(value)} characters long, above the maximum {self.max_len}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise ArgError(path, f"{_echo(value)} is not {self.pattern_doc or 'of the form ' + self.pattern}")
        return value

    def describe(self):
        return "string" + (f" ({self.pattern_doc})" if self.pattern_doc else "")


@dataclass(frozen=True)
class Ipv4(Str):
    max_len: int = 15

    def check(self, value, path):
        value = super().check(value, path)
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ArgError(path, f"{_echo(value)} is not an IPv4 address") from None
        return value

    def describe(self):
        return "IPv4 address"


@dataclass(frozen=True)
class Enum(Spec):
    values: tuple[str, ...] = ()

    def check(self, value, path):
        if not isinstance(value, str) or value not in self.values:
            raise ArgError(path, f"{_echo(value)} is not one of {', '.join(self.values)}")
        return value

    def describe(self):
        return " | ".join(self.values)


@dataclass(frozen=True)
class Array(Spec):
    items: Spec = field(default_factory=Str)
    max_items: int = 64
    min_items: int = 0
    unique: bool = True

    def check(self, value, path):
        if not isinstance(value, list):
            raise ArgError(path, f"expected an array, got {_type_name(value)} {_echo(value)}")
        if len(value) < self.min_items:
            raise ArgError(path, f"needs at least {self.min_items} item(s)")
        if len(value) > self.max_items:
            raise ArgError(path, f"has {len(value)} items, above the maximum {self.max_items}")
        out = [self.items.check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.unique:
            # Items here are strings or objects; repr is a stable identity for both.
            seen: set[str] = set()
            for i, v in enumerate(out):
                key = repr(v)
                if key in seen:
                    raise ArgError(f"{path}[{i}]", f"{_echo(v)} is repeated")
                seen.add(key)
        return out

    def describe(self):
        return f"[{self.items.describe()}]"


@dataclass(frozen=True)
class Obj(Spec):
    fields: Mapping[str, Spec] = field(default_factory=dict)

    def check(self, value, path):
        if not isinstance(value, dict):
            raise ArgError(path, f"expected an object, got {_type_name(value)} {_echo(value)}")
        for key in value:
            if key not in self.fields:
                allowed = ", ".join(self.fields) or "none"
                raise ArgError(f"{path}.{key}" if isinstance(key, str) else path,
                               f"unknown argument (allowed: {allowed})")
        out = {}
        for name, spec in self.fields.items():
            if name in value:
                out[name] = spec.check(value[name], f"{path}.{name}")
            elif spec.required:
                raise ArgError(f"{path}.{name}", "is required")
            elif spec.default is not None:
                out[name] = spec.default
        return out

    def describe(self):
        return "object"


IFNAME = Str(max_len=15, pattern=r"[^/\s:]+",
             pattern_doc="a network interface name (1-15 characters, no '/', ':' or spaces)")

_RATES = Obj(fields={
    "min_mbps": Num(min=0.1, required=True, doc="Never below (also the rate when no reflector answers)."),
    "base_mbps": Num(min=0.1, required=True, doc="The starting rate, and where an idle link drifts back to."),
    "max_mbps": Num(min=0.1, required=True, doc="Never above."),
}, doc="min_mbps <= base_mbps <= max_mbps, in Mbit/s.")
# Not in the published schemas: adaptive shaping (README "Adaptive shaping").
ADAPTIVE = Obj(fields={
    "mode": Enum(values=("active", "monitor"), default="active",
                 doc="active: the shaper's rate follows the link; monitor: decide and log only."),
    "upload": _RATES, "download": _RATES,
    "reflectors": Array(items=Ipv4(), max_items=16,
                        doc="Hosts to measure the round trip against, beside the default gateway."),
    "active_reflectors": Int(min=1, max=16, default=6, doc="How many are probed at once."),
}, doc="Adaptive shaping: the shaped rate follows the link's capacity between min and max.")

ARGS: dict[str, Obj] = {
    "qos_traffic_analysis": Obj(fields={
        "duration": Int(min=1, max=3600, required=True, doc="Seconds to measure."),
        "interfaces": Array(items=IFNAME, max_items=256,
                            doc="Interfaces to measure; default: every interface that is up, "
                                "not loopback, and has carried traffic."),
        "analysis_type": Enum(values=("basic", "comprehensive", "realtime"), default="comprehensive",
                              doc="basic: counters and throughput; comprehensive: also protocols, "
                                  "flows, patterns and latency/jitter/loss probes; realtime: "
                                  "comprehensive plus a progress message every sample."),
        "sampling_interval": Int(min=1, max=3600, default=1,
                                 doc="Seconds between samples (schema: >= 1; bounded by duration)."),
        "include_protocols": Bool(default=True, doc="Report the protocol distribution."),
    }),
    "qos_performance_monitor": Obj(fields={
        "monitor_duration": Int(min=60, max=3600, required=True, doc="Seconds to monitor."),
        "metrics": Array(items=Enum(values=("latency", "throughput", "jitter", "packet_loss")),
                         required=True, min_items=1, doc="Metrics to measure."),
        "target_hosts": Array(items=Str(max_len=253, pattern=r"[A-Za-z0-9.:_-]+",
                                        pattern_doc="a host name or IP address"),
                              max_items=64, doc="Hosts to probe; default: gateway and broker."),
        "alert_thresholds": Obj(fields={
            "latency_ms": Num(min=0), "jitter_ms": Num(min=0),
            "packet_loss_percent": Num(min=0, max=100), "throughput_mbps": Num(min=0),
        }, doc="Thresholds that open alert episodes."),
    }),
    "qos_anomaly_detection": Obj(fields={
        "detection_window": Int(min=300, max=86400, required=True, doc="Seconds to examine."),
        "baseline_period": Int(min=3600, max=604800, default=86400, doc="Seconds of baseline."),
        "sensitivity": Enum(values=("low", "medium", "high"), default="medium"),
        "metrics": Array(items=Enum(values=("latency", "throughput", "error_rate", "jitter")),
                         required=True, min_items=1),
        "detection_methods": Array(items=Enum(values=("statistical", "ml_based")),
                                   default=("statistical", "ml_based")),
    }),
    "qos_auto_optimization": Obj(fields={
        "optimization_goals": Array(
            items=Enum(values=("minimize_latency", "maximize_throughput", "improve_reliability")),
            required=True, min_items=1),
        "constraints": Obj(fields={
            "max_bandwidth_mbps": Num(min=1),
            "priority_applications": Array(items=Enum(values=("voip", "video_conference", "gaming",
                                                              "streaming"))),
            "time_window": Enum(values=("business_hours", "peak_hours", "off_peak", "always")),
        }),
        "adaptive": ADAPTIVE,
        "dry_run": Bool(default=True),
    }),
    "qos_config": Obj(fields={
        "policy": Enum(values=("gaming", "streaming", "work", "balanced", "custom"), required=True),
        "rules": Array(items=Obj(fields={
            "name": Str(max_len=64, required=True),
            "match": Obj(required=True, fields={
                "protocol": Enum(values=("tcp", "udp", "icmp", "any")),
                "port_range": Str(max_len=11, pattern=r"\d{1,5}(-\d{1,5})?",
                                  pattern_doc="a port or a range such as 3000-4000"),
                "src_ip": Ipv4(), "dst_ip": Ipv4(),
                "device_mac": Str(max_len=17, pattern=r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}",
                                  pattern_doc="a MAC address aa:bb:cc:dd:ee:ff"),
            }),
            "priority": Enum(values=("high", "medium", "low"), required=True),
            "bandwidth_limit": Int(min=1),
            "bandwidth_guarantee": Int(min=1),
        }), max_items=128),
        "adaptive": ADAPTIVE,
        "enable": Bool(default=True),
    }),
    # Not in the published schemas: confirms the pending shaping change, or reverts it now.
    "qos_shaping_confirm": Obj(fields={
        "transaction": Str(max_len=64, doc="The pending transaction's id (default: whichever is pending)."),
        "revert": Bool(default=False, doc="Revert the pending or confirmed change instead of confirming it."),
    }),
    # Not in the published schemas: the agent's own control op (issue 3).
    "qos_cancel": Obj(fields={
        "id": Str(max_len=128, required=True, doc="The id of the running or queued command to cancel."),
    }),
}


def validate(op: str, args: Any) -> dict:
    """Check `args` of `op` against its table; return them with defaults filled.

    Raises ArgError naming the first wrong field (`args.duration: 0 is below the minimum 1`).
    """
    spec = ARGS.get(op)
    if spec is None:
        raise CommandError("E_UNSUPPORTED_OPERATION", f"op: {_echo(op)} is not a supported operation")
    out = spec.check({} if args is None else args, "args")
    # Defaults declared as tuples stay immutable in the table; hand out lists.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
