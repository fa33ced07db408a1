# Binding of native/detect.c (included by _core.pyx).
cdef extern from "detect.h" nogil:
    ctypedef struct rtk_detect_config:
        uint32_t window, warmup, bins, days
        double period, smooth_alpha
        uint32_t recent, recent_long, history, quiet, weeks
    ctypedef struct rtk_detector:
        rtk_detect_config cfg
        uint64_t samples
        double z[3]
        double fit[3]
        double expected, surprise, score, likelihood
        int view, beyond_range
        uint32_t quiet_left
    void rtk_detect_default_config(rtk_detect_config *c)
    size_t rtk_detect_arena_size(const rtk_detect_config *c)
    int rtk_detect_init(rtk_detector *d, void *arena, const rtk_detect_config *c)
    double rtk_detect_update(rtk_detector *d, double t, double x)
    size_t rtk_detect_state_size(const rtk_detector *d)
    void rtk_detect_save(const rtk_detector *d, const void *arena, void *out)
    int rtk_detect_load(rtk_detector *d, void *arena, const void *state, size_t length)
    void rtk_detect_run(rtk_detector *d, const double *t, const double *x, uint32_t n, double *out)

DETECTOR_FIELDS = ("window", "warmup", "bins", "days", "period", "smooth_alpha", "recent", "recent_long", "history",
                   "quiet", "weeks")


def detector_defaults():
    """The detector's default settings (native/detect.c), tuned for per-minute series."""
    cdef rtk_detect_config c
    rtk_detect_default_config(&c)
    return {k: v for k, v in c.items()}


cdef class Detector:
    """Streaming anomaly score in [0, 1] for one metric (native/detect.c): causal, fixed
    memory, one `update` per sample. Settings default to `detector_defaults()`."""
    cdef rtk_detector d
    cdef void *arena
    cdef readonly dict settings

    def __cinit__(self, **settings):
        unknown = set(settings) - set(DETECTOR_FIELDS)
        if unknown:
            raise TypeError(f"unknown detector settings: {', '.join(sorted(unknown))}")
        cdef rtk_detect_config c
        rtk_detect_default_config(&c)
        merged = dict(c, **settings)
        c = merged
        self.arena = PyMem_Malloc(rtk_detect_arena_size(&c))
        if self.arena == NULL:
            raise MemoryError()
        if rtk_detect_init(&self.d, self.arena, &c) != 0:
            raise ValueError(f"detector settings out of range: {settings}")
        self.settings = merged

    def __dealloc__(self):
        PyMem_Free(self.arena)

    @staticmethod
    def memory_bytes(**settings):
        """Bytes one detector with these settings allocates besides the object itself."""
        cdef rtk_detect_config c
        rtk_detect_default_config(&c)
        c = dict(c, **settings)
        return rtk_detect_arena_size(&c) + sizeof(rtk_detector)

    cpdef double update(self, double t, double x):
        """Score of the sample x at time t (seconds); NaN for a NaN (a gap)."""
        return rtk_detect_update(&self.d, t, x)

    def run(self, t, x):
        """Scores of a whole series, sample by sample (as causal as `update`), in one call."""
        cdef array ts = array("d", t), xs = array("d", x)
        if len(ts) != len(xs):
            raise ValueError(f"{len(ts)} timestamps for {len(xs)} values")
        cdef array out = clone(_DOUBLES, len(xs), False)
        cdef uint32_t n = len(xs)
        with nogil:
            rtk_detect_run(&self.d, ts.data.as_doubles, xs.data.as_doubles, n, out.data.as_doubles)
        return out

    def state(self):
        """Everything the detector has learned, as bytes for `restore` (same build, same settings)."""
        cdef bytearray out = bytearray(rtk_detect_state_size(&self.d))
        cdef unsigned char *buf = out
        rtk_detect_save(&self.d, self.arena, buf)
        return bytes(out)

    def restore(self, const unsigned char[::1] state):
        """Continue from a `state()`: the next scores are those the saved detector would give."""
        if len(state) == 0 or rtk_detect_load(&self.d, self.arena, &state[0], len(state)) != 0:
            raise ValueError(f"not a detector state of this build with settings {self.settings}")

    @property
    def samples(self):
        return self.d.samples

    def explain(self):
        """How the last sample was scored."""
        return {"score": self.d.score, "surprise": self.d.surprise,
                "tail_neg_log10": self.d.likelihood, "quiet_after_alarm": self.d.quiet_left,
                "beyond_range": bool(self.d.beyond_range),
                "z": {"level": self.d.z[0], "change": self.d.z[1], "smoothed": self.d.z[2]},
                "baseline": ("recent", "time_of_day", "time_of_week")[self.d.view],
                "expected": None if self.d.expected != self.d.expected else self.d.expected,
                "fit": {"recent": self.d.fit[0], "time_of_day": self.d.fit[1], "time_of_week": self.d.fit[2]}}
