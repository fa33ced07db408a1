/* Robust baselines for comparing a window of a metric with its past: median and
 * MAD (not mean and standard deviation: the past holds anomalies too), overall
 * and per time-of-day bin, and the z of every window value against its bin.
 * Loops over a week of per-minute values, run once per query: no allocation,
 * the caller gives the scratch. NaN values (missing minutes) are skipped. */
#ifndef RTK_BASELINE_H
#define RTK_BASELINE_H

#include <stdint.h>

typedef struct {
    double center; /* median */
    double scale;  /* one standard deviation: 1.4826 MAD, else 1.2533 mean |x - median|, at least min_scale */
    uint32_t n;    /* values behind it */
} rtk_robust;

/* Robust center and scale of the non-NaN values of v[0..n). min_scale (> 0, in the values'
   unit) is the smallest deviation that counts as one standard deviation: a baseline that never
   moved (an error rate of 0 all day) would otherwise make the first small change a huge z.
   scratch: n doubles. */
rtk_robust rtk_robust_fit(const double *v, uint32_t n, double min_scale, double *scratch);

/* Value i of v is the bucket at time (first + i) * step seconds. Fits fit[b] for each of
   `bins` bins of the day (UTC) and fit[bins] over everything; a bin with fewer than
   min_points values takes the overall fit; every scale is at least min_scale. Returns the days between the first and last
   non-NaN values, so the caller can decide whether a time-of-day baseline is warranted.
   scratch: n doubles; order: n uint32. */
double rtk_tod_fit(const double *v, uint32_t n, int64_t first, int64_t step, uint32_t bins,
                   uint32_t min_points, double min_scale, double *scratch, uint32_t *order, rtk_robust *fit);

/* z[i] = (v[i] - center) / scale against the bin of bucket first + i (or against
   fit[bins] when by_bin is 0); NaN where v[i] is NaN. */
void rtk_tod_z(const double *v, uint32_t n, int64_t first, int64_t step, uint32_t bins,
               const rtk_robust *fit, int by_bin, double *z);

#endif
