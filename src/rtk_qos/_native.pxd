# The native core's C API, declared once. Only _core.pyx cimports this.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "counters.h" nogil:
    enum:
        RTK_IFNAMSIZ
        RTK_NCOUNTERS
        RTK_MAX_LINKS
        RTK_SRC_NETLINK
        RTK_SRC_PROCFS
        RTK_FORCE_PROCFS
    ctypedef struct rtk_link:
        int32_t ifindex
        char name[16]
        uint64_t c[8]
    ctypedef struct rtk_reader:
        int source
    int rtk_reader_open(rtk_reader *r, int flags)
    void rtk_reader_close(rtk_reader *r)
    int rtk_reader_read(rtk_reader *r, rtk_link *out, int cap)
    long rtk_reader_raw_dump(rtk_reader *r)
    int rtk_parse_proc_net_dev(const char *text, size_t length, rtk_link *out, int cap,
                               int32_t (*resolve)(void *ctx, const char *name), void *ctx)

cdef extern from "ring.h" nogil:
    ctypedef struct rtk_ring:
        uint64_t pushed
    uint32_t rtk_ring_capacity(uint32_t wanted)
    uint32_t rtk_ring_count(const rtk_ring *r)
    double rtk_ring_at(const rtk_ring *r, uint64_t seq, uint32_t col)
    uint32_t rtk_ring_copy_last(const rtk_ring *r, uint32_t col, uint32_t n, double *out)

cdef extern from "stats.h" nogil:
    double RTK_MAD_TO_SIGMA
    ctypedef struct rtk_rolling:
        rtk_ring ring
        uint32_t k
        uint32_t window
        uint32_t n
        double mean[8]
        double ewma[8]
        double last[8]
        double z[8]
    ctypedef struct rtk_summary:
        uint32_t n
        double mean, std, min, max, ewma
        double p50, p95, p99, median, mad
    void rtk_rolling_init(rtk_rolling *s, double *buf, uint32_t ring_cap, uint32_t stride, uint32_t k,
                          uint32_t window, double ewma_alpha)
    void rtk_rolling_push(rtk_rolling *s, const double *x)
    double rtk_rolling_var(const rtk_rolling *s, uint32_t j)
    double rtk_rolling_std(const rtk_rolling *s, uint32_t j)
    double rtk_rolling_min(const rtk_rolling *s, uint32_t j)
    double rtk_rolling_max(const rtk_rolling *s, uint32_t j)
    void rtk_rolling_summary(const rtk_rolling *s, uint32_t j, uint32_t n, double *scratch,
                             rtk_summary *out)
    double rtk_quantile(double *v, uint32_t n, double q)
    void rtk_median_mad(double *v, uint32_t n, double *median, double *mad)

cdef extern from "jitter.h" nogil:
    ctypedef struct rtk_jitter:
        double jitter
        double ipdv_max
        uint64_t n
    void rtk_jitter_init(rtk_jitter *j)
    void rtk_jitter_update(rtk_jitter *j, double delay)
    double rtk_jitter_ipdv_mean(const rtk_jitter *j)

cdef extern from "delta.h" nogil:
    uint64_t rtk_counter_delta(uint64_t prev, uint64_t cur, int *kind)
    int rtk_link_deltas(const uint64_t *prev, const uint64_t *cur, uint64_t *out)

cdef extern from "sampler.h" nogil:
    enum:
        RTK_NMETRICS
        RTK_SLOT_EMPTY
        RTK_SLOT_ACTIVE
        RTK_SLOT_GONE
    ctypedef struct rtk_slot:
        int32_t ifindex
        char name[16]
        unsigned char state
        uint64_t first_tick
        uint64_t last_tick
        uint64_t total[8]
        uint32_t wraps
        uint32_t resets
        rtk_rolling rate
    ctypedef struct rtk_sampler:
        int cap
        int nslots
        uint32_t history
        uint32_t window
        rtk_slot *slots
        rtk_ring times
        uint64_t ticks
        int overflow
        int appeared
        int vanished
    size_t rtk_sampler_arena_size(int cap, uint32_t history)
    void rtk_sampler_init(rtk_sampler *s, void *arena, int cap, uint32_t history, uint32_t window,
                          double ewma_alpha)
    void rtk_sampler_track(rtk_sampler *s, const char *names, int n)
    void rtk_sampler_ingest(rtk_sampler *s, const rtk_link *links, int n, double t)
    int rtk_sampler_tick(rtk_sampler *s, rtk_reader *r)
    double rtk_monotonic()
    int rtk_sampler_value_at(const rtk_sampler *s, int slot, int metric, uint64_t tick, double *v)
    void rtk_sampler_sum_series(const rtk_sampler *s, const int *slots, int nslots, int metric,
                                uint64_t start, uint32_t n, double *out)

cdef extern from "history.h":
    int RTK_HIST_TIERS
    ctypedef struct rtk_hbucket:
        float min
        float mean
        float max
        float score
    ctypedef struct rtk_history:
        uint64_t samples
        int64_t last[3]
    size_t rtk_history_arena_size(const uint32_t *cap)
    int rtk_history_init(rtk_history *h, void *arena, const uint32_t *cap, const int64_t *step)
    int rtk_history_push(rtk_history *h, int64_t t, float value, float score) nogil
    uint32_t rtk_history_read(const rtk_history *h, int tier, int64_t start, int64_t end, rtk_hbucket *out)
    size_t rtk_history_serialized_size(const rtk_history *h)
    void rtk_history_serialize(const rtk_history *h, uint8_t *out)
    int rtk_history_deserialize(rtk_history *h, const uint8_t *data, size_t length)
