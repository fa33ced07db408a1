# Binding of native/autorate.c (included by _core.pyx).
cdef extern from "autorate.h" nogil:
    enum:
        RTK_AR_REFLECTORS
        RTK_AR_WINDOW
        RTK_AR_LOAD_TICKS
    ctypedef struct rtk_ar_params:
        double delay_ms
        uint32_t window_n, bloat_k, cut_load_ticks
        double cut_min, cut_max, cut_lo_ms, cut_hi_ms, cut_load_factor, bloat_load, cut_refractory_s, drain_s
        double high_load, raise_min, raise_max, raise_growth, raise_delta_ms, raise_refractory_s, decay_per_s, decay_refractory_s, stall_s
        double baseline_down_gain, baseline_up_gain, delta_gain
    ctypedef struct rtk_ar_reflector:
        double baseline_ms, delta_ewma_ms, last_reply
        uint64_t replies
    ctypedef struct rtk_ar_direction:
        double min_bps, base_bps, max_bps, rate_bps, last_change, last_cut, delta_at_cut, raise_step
    ctypedef struct rtk_autorate:
        rtk_ar_params p
        rtk_ar_reflector reflector[16]
        double last_reply
        rtk_ar_direction dir[2]
    rtk_ar_params rtk_ar_defaults()
    int rtk_ar_init(rtk_autorate *a, const rtk_ar_params *p, const double *min_bps, const double *base_bps,
                    const double *max_bps, double now)
    void rtk_ar_reflector_reset(rtk_autorate *a, uint32_t i)
    int rtk_ar_sample(rtk_autorate *a, uint32_t i, double rtt_ms, double now)
    int rtk_ar_tick(rtk_autorate *a, uint32_t d, double load_bps, double now)
    uint32_t rtk_ar_delayed(const rtk_autorate *a)
    double rtk_ar_mean_delta(const rtk_autorate *a)

AUTORATE_DIRECTIONS = ("download", "upload")
AUTORATE_REASONS = ("hold", "cut", "raise", "decay", "stall")
AUTORATE_REFLECTORS = RTK_AR_REFLECTORS
AUTORATE_WINDOW = RTK_AR_WINDOW


def autorate_defaults():
    """The controller's default constants (native/autorate.c)."""
    return dict(rtk_ar_defaults())


cdef class Autorate:
    """The adaptive shaping controller (native/autorate.c): reflector replies in with `sample`,
    a few `tick`s a second per direction out. Rates in bit/s, times CLOCK_MONOTONIC seconds
    (`monotonic()`); `params` override `autorate_defaults()`."""
    cdef rtk_autorate a

    def __cinit__(self, min_bps, base_bps, max_bps, double now, **params):
        unknown = set(params) - set(autorate_defaults())
        if unknown:
            raise TypeError(f"unknown autorate settings: {', '.join(sorted(unknown))}")
        cdef rtk_ar_params p = dict(autorate_defaults(), **params)
        cdef double lo[2]
        cdef double base[2]
        cdef double hi[2]
        for d in range(2):
            lo[d], base[d], hi[d] = min_bps[d], base_bps[d], max_bps[d]
        if rtk_ar_init(&self.a, &p, lo, base, hi, now) != 0:
            raise ValueError(f"autorate: rates must be 0 < min <= base <= max, 1 <= bloat_k <= window_n <= "
                             f"{RTK_AR_WINDOW} and 1 <= cut_load_ticks <= {RTK_AR_LOAD_TICKS}: min {list(min_bps)}, base {list(base_bps)}, max {list(max_bps)}, "
                             f"{params}")

    def sample(self, uint32_t reflector, double rtt_ms, double now):
        """One reply; True when it is delayed."""
        rc = rtk_ar_sample(&self.a, reflector, rtt_ms, now)
        if rc < 0:
            raise ValueError(f"autorate sample: reflector {reflector} (< {RTK_AR_REFLECTORS}), rtt {rtt_ms} ms")
        return bool(rc)

    def reset_reflector(self, uint32_t reflector):
        rtk_ar_reflector_reset(&self.a, reflector)

    def tick(self, uint32_t direction, double load_bps, double now):
        """Decides a direction's rate (0 download, 1 upload); returns the reason's name."""
        if direction >= 2:
            raise ValueError(f"direction {direction}: 0 download, 1 upload")
        return AUTORATE_REASONS[rtk_ar_tick(&self.a, direction, load_bps, now)]

    def rate(self, uint32_t direction):
        return self.a.dir[direction % 2].rate_bps

    def reflector(self, uint32_t i):
        """(baseline_ms, delta_ewma_ms, last_reply, replies) of reflector i."""
        cdef rtk_ar_reflector *r = &self.a.reflector[i % RTK_AR_REFLECTORS]
        return r.baseline_ms, r.delta_ewma_ms, r.last_reply, r.replies

    @property
    def delayed(self):
        return rtk_ar_delayed(&self.a)

    @property
    def mean_delta_ms(self):
        return rtk_ar_mean_delta(&self.a)

    @property
    def last_reply(self):
        return self.a.last_reply
