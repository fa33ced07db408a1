#include "baseline.h"

#include <math.h>
#include <string.h>

#include "stats.h"

#define MEANAD_TO_SIGMA 1.2533
#define DAY 86400

/* Robust fit of m values already gathered (and reordered) in w. */
static rtk_robust fit_values(double *w, uint32_t m, double min_scale)
{
    rtk_robust r = {0.0, 0.0, m};
    if (m == 0)
        return r;
    double mad;
    rtk_median_mad(w, m, &r.center, &mad); /* leaves |w[i] - median| in w */
    r.scale = RTK_MAD_TO_SIGMA * mad;
    if (r.scale == 0) {
        /* Over half the values are equal (an error rate that is mostly 0): the mean
           absolute deviation still sees the rest. */
        double sum = 0;
        for (uint32_t i = 0; i < m; i++)
            sum += w[i];
        r.scale = MEANAD_TO_SIGMA * sum / m;
    }
    if (!(r.scale >= min_scale)) /* also when the data is flat: scale 0 */
        r.scale = min_scale;
    return r;
}

rtk_robust rtk_robust_fit(const double *v, uint32_t n, double min_scale, double *scratch)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!isnan(v[i]))
            scratch[m++] = v[i];
    return fit_values(scratch, m, min_scale);
}

static uint32_t bin_of(int64_t bucket, int64_t step, uint32_t bins)
{
    int64_t second = (bucket * step) % DAY;
    if (second < 0)
        second += DAY;
    return (uint32_t)(second * bins / DAY);
}

double rtk_tod_fit(const double *v, uint32_t n, int64_t first, int64_t step, uint32_t bins,
                   uint32_t min_points, double min_scale, double *scratch, uint32_t *order, rtk_robust *fit)
{
    fit[bins] = rtk_robust_fit(v, n, min_scale, scratch);
    if (fit[bins].n == 0) {
        for (uint32_t b = 0; b < bins; b++)
            fit[b] = fit[bins];
        return 0.0;
    }
    /* Counting sort of the values by bin: per bin, then one fit each. fit[b].n counts first. */
    for (uint32_t b = 0; b < bins; b++)
        fit[b].n = 0;
    int64_t lo = -1, hi = -1;
    for (uint32_t i = 0; i < n; i++)
        if (!isnan(v[i])) {
            fit[bin_of(first + i, step, bins)].n++;
            if (lo < 0)
                lo = i;
            hi = i;
        }
    uint32_t start = 0;
    for (uint32_t b = 0; b < bins; b++) {
        uint32_t count = fit[b].n;
        fit[b].n = start; /* now the next free slot of bin b */
        start += count;
    }
    for (uint32_t i = 0; i < n; i++)
        if (!isnan(v[i]))
            order[fit[bin_of(first + i, step, bins)].n++] = i;
    start = 0;
    for (uint32_t b = 0; b < bins; b++) {
        uint32_t end = fit[b].n, m = end - start;
        for (uint32_t k = 0; k < m; k++)
            scratch[k] = v[order[start + k]];
        fit[b] = m >= min_points ? fit_values(scratch, m, min_scale) : fit[bins];
        start = end;
    }
    return (double)(hi - lo + 1) * step / DAY;
}

void rtk_tod_z(const double *v, uint32_t n, int64_t first, int64_t step, uint32_t bins,
               const rtk_robust *fit, int by_bin, double *z)
{
    for (uint32_t i = 0; i < n; i++) {
        const rtk_robust *r = by_bin ? &fit[bin_of(first + i, step, bins)] : &fit[bins];
        z[i] = isnan(v[i]) ? NAN : (v[i] - r->center) / r->scale;
    }
}
