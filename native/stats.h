/* Rolling statistics over the newest `window` values of a ring, updated in O(1)
 * per value with no allocation: mean and variance (sliding Welford, recomputed
 * exactly once per window to cancel floating-point drift), min and max
 * (monotonic deques of sequence numbers), EWMA, and the z-score of each new
 * value against the window as it was before that value arrived.
 * Order statistics (quantiles, median, MAD) are computed on demand from a copy
 * of the window, since keeping them incrementally costs O(window) per value. */
#ifndef RTK_STATS_H
#define RTK_STATS_H

#include <stdint.h>

#include "ring.h"

typedef struct {
    rtk_ring ring;
    uint32_t window;     /* <= ring capacity */
    uint32_t n;          /* values in the window */
    uint32_t since_exact;
    double mean, m2;
    double ewma, alpha;
    double last, last_z;
    uint64_t *minq, *maxq; /* deques of sequence numbers, window + 1 slots each */
    uint32_t qcap, min_head, min_len, max_head, max_len;
} rtk_rolling;

/* Storage the caller provides: `ring_cap` doubles (a power of two, see
   rtk_ring_capacity) and 2 * (window + 1) uint64_t for the deques. */
void rtk_rolling_init(rtk_rolling *s, double *ring_buf, uint32_t ring_cap,
                      uint64_t *deque_buf, uint32_t window, double ewma_alpha);

/* Adds x; returns its z-score against the window before it (0 while the window
   has fewer than 2 values or no spread). */
double rtk_rolling_push(rtk_rolling *s, double x);

double rtk_rolling_var(const rtk_rolling *s); /* sample variance, 0 when n < 2 */
double rtk_rolling_std(const rtk_rolling *s);
double rtk_rolling_min(const rtk_rolling *s); /* 0 when empty */
double rtk_rolling_max(const rtk_rolling *s);

typedef struct {
    uint32_t n;
    double mean, std, min, max, ewma;
    double p50, p95, p99, median, mad;
} rtk_summary;

/* Summary of the newest `n` values of the ring (n = 0: the rolling window),
   using `scratch` (n doubles). Every field is 0 for an empty window: no NaN. */
void rtk_rolling_summary(const rtk_rolling *s, uint32_t n, double *scratch, rtk_summary *out);

/* Quantile q in [0, 1] of v[0..n) with linear interpolation between order
   statistics (numpy's default, "type 7"). Reorders v. 0 when n == 0. */
double rtk_quantile(double *v, uint32_t n, double q);

/* Median and median absolute deviation of v[0..n). Reorders v. */
void rtk_median_mad(double *v, uint32_t n, double *median, double *mad);

#endif
