# cython: language_level=3
"""The only place Python meets the native core (native/*.c).

Python calls in once per tick (`Sampler.tick`) or once per query; the loops
over links, counters and samples all run in C on preallocated memory.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EINVAL
from libc.stdint cimport INT64_MIN, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memset
from cpython.array cimport array, clone

from rtk_qos._native cimport *

import os

#: Rate series kept per link, one per kernel counter, in units per second.
METRICS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
           "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
COUNTERS = METRICS
DELTA_KINDS = ("ok", "wrap32", "reset")
MAD_TO_SIGMA = RTK_MAD_TO_SIGMA
SLOT_STATES = {RTK_SLOT_EMPTY: "empty", RTK_SLOT_ACTIVE: "active", RTK_SLOT_GONE: "gone"}

cdef array _DOUBLES = array("d")


cdef inline void _check(long rc, str what) except *:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")


cdef inline str _name(const char *name):
    return name[:RTK_IFNAMSIZ].split(b"\0", 1)[0].decode("utf-8", "replace")


cdef tuple _link_tuple(const rtk_link *l):
    return (l.ifindex, _name(l.name), l.c[0], l.c[1], l.c[2], l.c[3], l.c[4], l.c[5], l.c[6], l.c[7])


cdef dict _summary_dict(const rtk_summary *s):
    return {"n": s.n, "mean": s.mean, "std": s.std, "min": s.min, "max": s.max, "ewma": s.ewma,
            "p50": s.p50, "p95": s.p95, "p99": s.p99, "median": s.median, "mad": s.mad}


cdef int _metric_index(metric) except -1:
    if isinstance(metric, str):
        return METRICS.index(metric)
    if not 0 <= metric < RTK_NMETRICS:
        raise ValueError(f"metric {metric} out of range")
    return metric


def monotonic():
    """CLOCK_MONOTONIC seconds, the clock every tick is stamped with."""
    return rtk_monotonic()


cdef class CounterReader:
    """Snapshots of every link's counters (netlink RTM_GETSTATS, else /proc/net/dev)."""
    cdef rtk_reader *r
    cdef rtk_link *links

    def __cinit__(self, bint force_procfs=False):
        self.r = <rtk_reader *>PyMem_Malloc(sizeof(rtk_reader))
        self.links = <rtk_link *>PyMem_Malloc(RTK_MAX_LINKS * sizeof(rtk_link))
        if self.r == NULL or self.links == NULL:
            raise MemoryError()
        memset(self.r, 0, sizeof(rtk_reader))
        _check(rtk_reader_open(self.r, RTK_FORCE_PROCFS if force_procfs else 0), "opening counters")

    def __dealloc__(self):
        if self.r != NULL:
            rtk_reader_close(self.r)
            PyMem_Free(self.r)
        PyMem_Free(self.links)

    @property
    def source(self):
        return "netlink" if self.r.source == RTK_SRC_NETLINK else "procfs"

    def read(self):
        """[(ifindex, name, rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errors, tx_errors,
        rx_dropped, tx_dropped)] for every link."""
        cdef int n = rtk_reader_read(self.r, self.links, RTK_MAX_LINKS)
        _check(n, "reading counters")
        return [_link_tuple(&self.links[i]) for i in range(n)]

    def raw_dump(self):
        """The RTM_GETSTATS dump alone, unparsed: the floor of a counter read. Returns bytes received."""
        cdef long got
        with nogil:
            got = rtk_reader_raw_dump(self.r)
        _check(got, "raw dump")
        return got


cdef class Sampler:
    """Per-tick pipeline over every link: snapshot, deltas, rates, rolling stats, z-scores.

    capacity: links tracked (a link beyond it is counted in `overflow`, not tracked);
    history: rate samples kept per series (rounded up to a power of two);
    window: samples in the rolling statistics and z-scores; ewma_alpha: EWMA gain.
    """
    cdef rtk_sampler s
    cdef void *arena
    cdef CounterReader reader
    cdef double *scratch

    def __cinit__(self, int capacity=256, uint32_t history=4096, uint32_t window=60,
                  double ewma_alpha=0.1, bint force_procfs=False, bint open_reader=True):
        if capacity < 1 or capacity > RTK_MAX_LINKS:
            raise ValueError(f"capacity {capacity} is not within 1-{RTK_MAX_LINKS}")
        if history < 2 or window < 1:
            raise ValueError("history must be >= 2 and window >= 1")
        self.arena = PyMem_Malloc(rtk_sampler_arena_size(capacity, history))
        if self.arena == NULL:
            raise MemoryError()
        rtk_sampler_init(&self.s, self.arena, capacity, history, window, ewma_alpha)
        self.scratch = <double *>PyMem_Malloc(self.s.history * sizeof(double))
        if self.scratch == NULL:
            raise MemoryError()
        if open_reader:
            self.reader = CounterReader(force_procfs)

    def __dealloc__(self):
        PyMem_Free(self.arena)
        PyMem_Free(self.scratch)

    @staticmethod
    def arena_bytes(int capacity, uint32_t history):
        """Memory a Sampler of this shape allocates for its slots and series."""
        return rtk_sampler_arena_size(capacity, history)

    @property
    def source(self):
        return self.reader.source if self.reader is not None else None

    @property
    def ticks(self):
        return self.s.ticks

    @property
    def history(self):
        return self.s.history

    @property
    def window(self):
        return self.s.window

    @property
    def last_time(self):
        """Monotonic time of the latest tick (0.0 before the first)."""
        return rtk_ring_at(&self.s.times, self.s.ticks - 1, 0) if self.s.ticks else 0.0

    @property
    def appeared(self):
        return self.s.appeared

    @property
    def vanished(self):
        return self.s.vanished

    @property
    def overflow(self):
        return self.s.overflow

    def track(self, names):
        """Track only the links with these names (before the first tick); empty: every link."""
        cdef int n = len(names)
        if self.s.ticks:
            raise RuntimeError("track() must come before the first tick")
        if n > self.s.cap:
            raise ValueError(f"{n} names exceed the capacity {self.s.cap}")
        # One flat buffer of n fixed-size, zero-padded names, as the C side reads them.
        buf = b"".join(name.encode()[:RTK_IFNAMSIZ - 1].ljust(RTK_IFNAMSIZ, b"\0") for name in names)
        rtk_sampler_track(&self.s, buf, n)

    def tick(self):
        """Read the kernel counters and ingest them. Returns the number of links read."""
        cdef int n
        if self.reader is None:
            raise RuntimeError("this sampler was made without a counter reader")
        with nogil:
            n = rtk_sampler_tick(&self.s, self.reader.r)
        _check(n, "reading counters")
        return n

    def ingest(self, links, double t):
        """Ingest a snapshot given as tuples shaped like CounterReader.read() at monotonic t."""
        cdef int n = len(links), i, k
        cdef rtk_link *buf = <rtk_link *>PyMem_Malloc(max(n, 1) * sizeof(rtk_link))
        if buf == NULL:
            raise MemoryError()
        try:
            for i, link in enumerate(links):
                memset(&buf[i], 0, sizeof(rtk_link))
                buf[i].ifindex = link[0]
                raw = link[1].encode()[:RTK_IFNAMSIZ - 1]
                for k in range(len(raw)):
                    buf[i].name[k] = raw[k]
                for k in range(RTK_NCOUNTERS):
                    buf[i].c[k] = link[2 + k]
            rtk_sampler_ingest(&self.s, buf, n, t)
        finally:
            PyMem_Free(buf)

    cdef rtk_slot *_slot(self, int slot) except NULL:
        if not 0 <= slot < self.s.nslots:
            raise IndexError(f"slot {slot} not in use")
        return &self.s.slots[slot]

    def slots(self):
        """Every slot ever used: dicts with ifindex, name, state, first/last tick, totals, wraps, resets."""
        cdef int i
        cdef rtk_slot *sl
        out = []
        for i in range(self.s.nslots):
            sl = &self.s.slots[i]
            out.append({"slot": i, "ifindex": sl.ifindex, "name": _name(sl.name),
                        "state": SLOT_STATES[sl.state], "first_tick": sl.first_tick,
                        "last_tick": sl.last_tick, "samples": sl.rate.ring.pushed,
                        "totals": dict(zip(COUNTERS, [sl.total[k] for k in range(RTK_NCOUNTERS)])),
                        "wraps": sl.wraps, "resets": sl.resets})
        return out

    def active_slots(self):
        """[(slot, name)] of the links present at the last tick."""
        cdef int i
        return [(i, _name(self.s.slots[i].name)) for i in range(self.s.nslots)
                if self.s.slots[i].state == RTK_SLOT_ACTIVE]

    def last_rates(self, int slot):
        """The latest rate of every metric of one slot, in METRICS order."""
        cdef rtk_slot *sl = self._slot(slot)
        return tuple(sl.rate.last[m] for m in range(RTK_NMETRICS))

    def last(self, int slot, metric):
        """(latest rate, its z-score against the window before it) of one series."""
        cdef int m = _metric_index(metric)
        cdef rtk_rolling *st = &self._slot(slot).rate
        return st.last[m], st.z[m]

    def rolling(self, int slot, metric):
        """The O(1) rolling state of one series: n, mean, std, min, max, ewma."""
        cdef int m = _metric_index(metric)
        cdef rtk_rolling *st = &self._slot(slot).rate
        return {"n": st.n, "mean": st.mean[m], "std": rtk_rolling_std(st, m),
                "min": rtk_rolling_min(st, m), "max": rtk_rolling_max(st, m), "ewma": st.ewma[m]}

    def summary(self, int slot, metric, uint32_t n=0):
        """Summary with quantiles and median/MAD over the newest n samples (0: the window)."""
        cdef rtk_summary out
        rtk_rolling_summary(&self._slot(slot).rate, _metric_index(metric), n, self.scratch, &out)
        return _summary_dict(&out)

    def series(self, int slot, metric):
        """Every retained rate sample of one series, oldest first, as array('d')."""
        cdef int m = _metric_index(metric)
        cdef rtk_rolling *st = &self._slot(slot).rate
        cdef uint32_t n = rtk_ring_count(&st.ring)
        cdef array out = clone(_DOUBLES, n, False)
        rtk_ring_copy_last(&st.ring, m, n, out.data.as_doubles)
        return out

    def sum_series(self, slots, metric, uint64_t start, uint32_t n):
        """Per tick from `start`, the sum of the given slots' rates (array('d') of n)."""
        cdef int m = _metric_index(metric), i, count = len(slots)
        cdef int *ids = <int *>PyMem_Malloc(max(count, 1) * sizeof(int))
        cdef array out = clone(_DOUBLES, n, False)
        if ids == NULL:
            raise MemoryError()
        try:
            for i in range(count):
                self._slot(slots[i])
                ids[i] = slots[i]
            rtk_sampler_sum_series(&self.s, ids, count, m, start, n, out.data.as_doubles)
        finally:
            PyMem_Free(ids)
        return out

    def tick_times(self):
        """Monotonic time of every retained tick, oldest first, and the tick number of the first."""
        cdef uint32_t n = rtk_ring_count(&self.s.times)
        cdef array out = clone(_DOUBLES, n, False)
        rtk_ring_copy_last(&self.s.times, 0, n, out.data.as_doubles)
        return self.s.ticks - n, out


cdef class Rolling:
    """One rolling series on its own (probes, tests): the same C code the sampler runs."""
    cdef rtk_rolling s
    cdef double *ring
    cdef double *scratch

    def __cinit__(self, uint32_t window, uint32_t history=0, double ewma_alpha=0.1):
        if window < 1:
            raise ValueError("window must be >= 1")
        cdef uint32_t cap = rtk_ring_capacity(max(history, window))
        self.ring = <double *>PyMem_Malloc(cap * sizeof(double))
        self.scratch = <double *>PyMem_Malloc(cap * sizeof(double))
        if self.ring == NULL or self.scratch == NULL:
            raise MemoryError()
        rtk_rolling_init(&self.s, self.ring, cap, 1, 1, window, ewma_alpha)

    def __dealloc__(self):
        PyMem_Free(self.ring)
        PyMem_Free(self.scratch)

    def push(self, double x):
        """Add x; returns its z-score against the window before it."""
        rtk_rolling_push(&self.s, &x)
        return self.s.z[0]

    def extend(self, values):
        cdef double x
        for x in values:
            rtk_rolling_push(&self.s, &x)

    @property
    def n(self):
        return self.s.n

    @property
    def mean(self):
        return self.s.mean[0]

    @property
    def var(self):
        return rtk_rolling_var(&self.s, 0)

    @property
    def std(self):
        return rtk_rolling_std(&self.s, 0)

    @property
    def min(self):
        return rtk_rolling_min(&self.s, 0)

    @property
    def max(self):
        return rtk_rolling_max(&self.s, 0)

    @property
    def ewma(self):
        return self.s.ewma[0]

    @property
    def last_z(self):
        return self.s.z[0]

    def summary(self, uint32_t n=0):
        cdef rtk_summary out
        rtk_rolling_summary(&self.s, 0, n, self.scratch, &out)
        return _summary_dict(&out)

    def values(self):
        cdef uint32_t n = rtk_ring_count(&self.s.ring)
        cdef array out = clone(_DOUBLES, n, False)
        rtk_ring_copy_last(&self.s.ring, 0, n, out.data.as_doubles)
        return out

    def bench_push(self, uint64_t count, double x0=1.0):
        """Push `count` values in a C loop (benchmarks: no Python call per value)."""
        cdef uint64_t i
        cdef double x = x0
        with nogil:
            for i in range(count):
                # A cheap deterministic wobble: varying values, no constant-folding.
                x = x * 1.0000001 + (<double>(i & 7) - 3.5)
                rtk_rolling_push(&self.s, &x)


cdef class Jitter:
    """RFC 3550 interarrival jitter and consecutive delay variation, fed delays in arrival order."""
    cdef rtk_jitter j

    def __cinit__(self):
        rtk_jitter_init(&self.j)

    def update(self, double delay):
        rtk_jitter_update(&self.j, delay)

    def extend(self, delays):
        cdef double d
        for d in delays:
            rtk_jitter_update(&self.j, d)

    @property
    def jitter(self):
        return self.j.jitter

    @property
    def ipdv_mean(self):
        return rtk_jitter_ipdv_mean(&self.j)

    @property
    def ipdv_max(self):
        return self.j.ipdv_max

    @property
    def n(self):
        return self.j.n


cdef array _as_doubles(values):
    return array("d", values)


def quantile(values, double q):
    """Quantile with linear interpolation (numpy's default); 0.0 for no values."""
    cdef array v = _as_doubles(values)
    return rtk_quantile(v.data.as_doubles, len(v), q)


def median_mad(values):
    """(median, median absolute deviation); (0.0, 0.0) for no values."""
    cdef array v = _as_doubles(values)
    cdef double med, mad
    rtk_median_mad(v.data.as_doubles, len(v), &med, &mad)
    return med, mad


def counter_delta(uint64_t prev, uint64_t cur):
    """(delta, kind) of one counter reading; kind is ok, wrap32 or reset."""
    cdef int kind
    cdef uint64_t d = rtk_counter_delta(prev, cur, &kind)
    return d, DELTA_KINDS[kind]


def link_deltas(prev, cur):
    """(deltas, kind) for the 8 counters of one link, with the link-level reset rule."""
    cdef uint64_t p[8]
    cdef uint64_t c[8]
    cdef uint64_t out[8]
    cdef int i
    if len(prev) != RTK_NCOUNTERS or len(cur) != RTK_NCOUNTERS:
        raise ValueError(f"a link has {RTK_NCOUNTERS} counters")
    for i in range(RTK_NCOUNTERS):
        p[i] = prev[i]
        c[i] = cur[i]
    kind = rtk_link_deltas(p, c, out)
    return [out[i] for i in range(RTK_NCOUNTERS)], DELTA_KINDS[kind]


def parse_proc_net_dev(text):
    """Parse /proc/net/dev text into CounterReader.read() tuples (ifindex 0: not resolved)."""
    cdef bytes raw = text.encode() if isinstance(text, str) else bytes(text)
    cdef rtk_link *links = <rtk_link *>PyMem_Malloc(RTK_MAX_LINKS * sizeof(rtk_link))
    if links == NULL:
        raise MemoryError()
    try:
        n = rtk_parse_proc_net_dev(raw, len(raw), links, RTK_MAX_LINKS, NULL, NULL)
        return [_link_tuple(&links[i]) for i in range(n)]
    finally:
        PyMem_Free(links)


#: Default history shape: 1 s for an hour, 1 min for 7 days, 1 h for 90 days.
HISTORY_TIERS = ((3600, 1), (10080, 60), (2160, 3600))
HISTORY_ERRORS = {-1: "its length does not match its shape (truncated?)", -2: "it is not an rtk-qos history",
                  -3: "it was written by another format version", -4: "it was written on a machine of the "
                  "other byte order", -5: "its tiers have another size or step"}


cdef class History:
    """One metric's multi-resolution history (native/history.c): min/mean/max/score buckets
    per tier, in fixed memory. Samples must come in time order."""
    cdef rtk_history h
    cdef void *arena
    cdef readonly tuple tiers

    def __cinit__(self, tiers=HISTORY_TIERS):
        cdef uint32_t cap[3]
        cdef int64_t step[3]
        if len(tiers) != 3:
            raise ValueError("a history has three tiers")
        for k, (c, s) in enumerate(tiers):
            cap[k], step[k] = c, s
        self.tiers = tuple((int(c), int(s)) for c, s in tiers)
        self.arena = PyMem_Malloc(rtk_history_arena_size(cap))
        if self.arena == NULL:
            raise MemoryError()
        if rtk_history_init(&self.h, self.arena, cap, step) != 0:
            raise ValueError(f"bad tiers {tiers}: sizes must be positive, each step a multiple of the one before")

    def __dealloc__(self):
        PyMem_Free(self.arena)

    @staticmethod
    def memory_bytes(tiers=HISTORY_TIERS):
        """Bytes one history of this shape allocates."""
        cdef uint32_t cap[3]
        for k, (c, _s) in enumerate(tiers):
            cap[k] = c
        return rtk_history_arena_size(cap)

    def push(self, int64_t t, double value, double score=0.0):
        """Add a sample at Unix second t; False when t is older than the newest sample."""
        return rtk_history_push(&self.h, t, <float>value, <float>score) == 0

    @property
    def samples(self):
        return self.h.samples

    def newest(self, int tier=0):
        """Bucket number (t // step) of the newest bucket of a tier, or None when empty."""
        return None if self.h.last[tier] == INT64_MIN else self.h.last[tier]

    def read(self, int tier, int64_t first, int64_t last):
        """Buckets `first`..`last` (numbers are t // step) as (min, mean, max, score), NaN where missing."""
        if not 0 <= tier < 3 or last < first:
            return []
        cdef uint32_t n = <uint32_t>(last - first + 1)
        cdef rtk_hbucket *out = <rtk_hbucket *>PyMem_Malloc(n * sizeof(rtk_hbucket))
        if out == NULL:
            raise MemoryError()
        try:
            rtk_history_read(&self.h, tier, first, last, out)
            return [(out[i].min, out[i].mean, out[i].max, out[i].score) for i in range(n)]
        finally:
            PyMem_Free(out)

    def read_columns(self, int tier, int64_t first, int64_t last):
        """Buckets `first`..`last` as four array('d') columns: min, mean, max, score (NaN where
        missing). The fast path for queries over days of buckets: no Python object per bucket."""
        if not 0 <= tier < 3 or last < first:
            return tuple(array("d") for _ in range(4))
        cdef uint32_t n = <uint32_t>(last - first + 1), i
        cdef rtk_hbucket *out = <rtk_hbucket *>PyMem_Malloc(n * sizeof(rtk_hbucket))
        if out == NULL:
            raise MemoryError()
        cdef array lo = clone(_DOUBLES, n, False), mean = clone(_DOUBLES, n, False)
        cdef array hi = clone(_DOUBLES, n, False), score = clone(_DOUBLES, n, False)
        try:
            rtk_history_read(&self.h, tier, first, last, out)
            for i in range(n):
                lo.data.as_doubles[i] = out[i].min
                mean.data.as_doubles[i] = out[i].mean
                hi.data.as_doubles[i] = out[i].max
                score.data.as_doubles[i] = out[i].score
            return lo, mean, hi, score
        finally:
            PyMem_Free(out)

    def to_bytes(self):
        cdef size_t n = rtk_history_serialized_size(&self.h)
        out = bytearray(n)
        cdef unsigned char[::1] view = out
        rtk_history_serialize(&self.h, &view[0])
        return bytes(out)

    def load_bytes(self, const unsigned char[::1] data):
        """Restore from to_bytes(); ValueError saying what is wrong with the data."""
        rc = rtk_history_deserialize(&self.h, &data[0] if len(data) else NULL, len(data))
        if rc != 0:
            raise ValueError(HISTORY_ERRORS.get(rc, f"error {rc}"))


# The native Isolation Forest (native/iforest.c).
include "_iforest.pxi"
# The streaming anomaly detector (native/detect.c).
include "_detect.pxi"
# Robust time-of-day baselines for window-against-history queries (native/baseline.c).
include "_baseline.pxi"
# The adaptive shaping controller (native/autorate.c).
include "_autorate.pxi"
