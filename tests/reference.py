"""Plain-Python reference implementations the native core is checked against.

Written for clarity, not speed: each mirrors the definition in the C header
docs, so a property test comparing the two checks the C against the spec.
"""
from __future__ import annotations

import math
from collections import deque

U32 = 2**32
WRAP32_MAX = 2**31


def counter_delta(prev: int, cur: int) -> tuple[int, str]:
    if cur >= prev:
        return cur - prev, "ok"
    if prev < U32 and cur < U32 and (U32 - prev) + cur <= WRAP32_MAX:
        return (U32 - prev) + cur, "wrap32"
    return cur, "reset"


def link_deltas(prev, cur):
    results = [counter_delta(p, c) for p, c in zip(prev, cur)]
    kinds = {k for _, k in results}
    if "reset" in kinds:
        return [c if c < p else c - p for p, c in zip(prev, cur)], "reset"
    return [d for d, _ in results], "wrap32" if "wrap32" in kinds else "ok"


def quantile(values, q):
    """Linear interpolation between order statistics (numpy's default)."""
    if not values:
        return 0.0
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    frac = pos - lo
    if frac == 0 or lo + 1 >= len(v):
        return v[lo]
    return v[lo] + frac * (v[lo + 1] - v[lo])


def median_mad(values):
    if not values:
        return 0.0, 0.0
    med = quantile(values, 0.5)
    return med, quantile([abs(x - med) for x in values], 0.5)


class Rolling:
    def __init__(self, window, alpha=0.1):
        self.window, self.alpha = window, alpha
        self.values = deque(maxlen=window)
        self.ewma = None

    def stats(self):
        v = list(self.values)
        n = len(v)
        mean = sum(v) / n if n else 0.0
        var = sum((x - mean) ** 2 for x in v) / (n - 1) if n > 1 else 0.0
        return n, mean, var

    def push(self, x):
        n, mean, var = self.stats()
        sd = math.sqrt(var)
        z = (x - mean) / sd if sd > 0 else 0.0
        self.values.append(x)
        self.ewma = x if self.ewma is None else self.ewma + self.alpha * (x - self.ewma)
        return z


def jitter(delays):
    """RFC 3550 interarrival jitter and mean/max |consecutive difference|."""
    j, diffs = 0.0, []
    for prev, cur in zip(delays, delays[1:]):
        d = abs(cur - prev)
        j += (d - j) / 16
        diffs.append(d)
    return j, (sum(diffs) / len(diffs) if diffs else 0.0), (max(diffs) if diffs else 0.0)


def parse_proc_net_dev(text):
    out = []
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        name, rest = line.split(":", 1)
        f = [int(x) for x in rest.split()]
        if len(f) != 16:
            continue
        out.append((0, name.strip(), f[0], f[8], f[1], f[9], f[2], f[10], f[3], f[11]))
    return out


class Sampler:
    """Slot semantics of native/sampler.h: one slot per continuous link lifetime."""

    def __init__(self, track=()):
        self.track = set(track)
        self.slots = []  # dicts: ifindex, name, state, prev, total, series
        self.ticks = 0
        self.prev_t = None

    def ingest(self, links, t):
        if self.prev_t is not None and t <= self.prev_t:
            return
        dt = None if self.prev_t is None else t - self.prev_t
        seen = set()
        for ifindex, name, *counters in links:
            slot = next((s for s in self.slots if s["state"] == "active" and s["ifindex"] == ifindex), None)
            if slot is None:
                if self.track and name not in self.track:
                    continue
                self.slots.append({"ifindex": ifindex, "name": name, "state": "active",
                                   "prev": counters, "total": [0] * 8, "series": [[] for _ in range(8)]})
                seen.add(id(self.slots[-1]))
                continue
            seen.add(id(slot))
            slot["name"] = name
            deltas, _kind = link_deltas(slot["prev"], counters)
            for m, d in enumerate(deltas):
                slot["total"][m] += d
                slot["series"][m].append(d / dt)
            slot["prev"] = counters
        for slot in self.slots:
            if slot["state"] == "active" and id(slot) not in seen:
                slot["state"] = "gone"
        self.prev_t = t
        self.ticks += 1
