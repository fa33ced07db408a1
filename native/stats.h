/* Rolling statistics over the newest `window` rows of a ring, for a block of up
 * to RTK_ROLLING_MAX_SERIES series that share one clock (the eight counters of
 * a link), updated together in O(1) per row with no allocation: mean and
 * variance (sliding Welford, recomputed exactly once per window to cancel
 * floating-point drift), EWMA, and the z-score of each new value against the
 * window as it was before that value. Keeping a block's state side by side
 * (struct of arrays) keeps a tick's working set to a few cache lines per link.
 *
 * A window of identical values (an idle link's zeros) has exactly its value as
 * mean and zero variance: sliding updates would leave rounding residue there,
 * and a z-score divided by that residue would be enormous.
 *
 * Min, max and the order statistics (quantiles, median, MAD) are computed when
 * asked, from the ring: they are read far less often than values arrive, and
 * keeping them incrementally would slow every tick of every series. */
#ifndef RTK_STATS_H
#define RTK_STATS_H

#include <stdint.h>

#include "ring.h"

#define RTK_ROLLING_MAX_SERIES 8
/* The MAD of a normal distribution times this is its standard deviation (1 / Phi^-1(3/4));
 * the Python side's copy (vocab/units.py) is checked against it by a test. */
#define RTK_MAD_TO_SIGMA 1.4826

typedef struct {
    rtk_ring ring;       /* series j is column j */
    uint32_t k;          /* series in the block */
    uint32_t window;     /* <= ring capacity */
    uint32_t n;          /* rows in the window */
    uint32_t since_exact;
    double inv_window, alpha;
    double mean[RTK_ROLLING_MAX_SERIES], m2[RTK_ROLLING_MAX_SERIES];
    double ewma[RTK_ROLLING_MAX_SERIES], last[RTK_ROLLING_MAX_SERIES], z[RTK_ROLLING_MAX_SERIES];
    uint32_t run[RTK_ROLLING_MAX_SERIES]; /* newest values equal to last[j] */
} rtk_rolling;

/* `buf` holds ring_cap rows `stride` doubles apart (ring_cap a power of two,
   see rtk_ring_capacity; stride >= k). */
void rtk_rolling_init(rtk_rolling *s, double *buf, uint32_t ring_cap, uint32_t stride, uint32_t k,
                      uint32_t window, double ewma_alpha);

/* Adds one row: x[j] for each series j. Each z-score (in s->z) is 0 while the
   window has fewer than 2 values or no spread. */
void rtk_rolling_push(rtk_rolling *s, const double *x);

double rtk_rolling_var(const rtk_rolling *s, uint32_t j); /* sample variance, 0 when n < 2 */
double rtk_rolling_std(const rtk_rolling *s, uint32_t j);
double rtk_rolling_min(const rtk_rolling *s, uint32_t j); /* over the window; 0 when empty */
double rtk_rolling_max(const rtk_rolling *s, uint32_t j);

typedef struct {
    uint32_t n;
    double mean, std, min, max, ewma;
    double p50, p95, p99, median, mad;
} rtk_summary;

/* Summary of series j over its newest n values (n = 0: the rolling window),
   using `scratch` (n doubles). Every field is 0 for an empty window: no NaN. */
void rtk_rolling_summary(const rtk_rolling *s, uint32_t j, uint32_t n, double *scratch, rtk_summary *out);

/* Quantile q in [0, 1] of v[0..n) with linear interpolation between order
   statistics (numpy's default, "type 7"). Reorders v. 0 when n == 0. */
double rtk_quantile(double *v, uint32_t n, double q);

/* Median and median absolute deviation of v[0..n). Reorders v. */
void rtk_median_mad(double *v, uint32_t n, double *median, double *mad);

#endif
