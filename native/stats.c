#include "stats.h"

#include <math.h>

void rtk_rolling_init(rtk_rolling *s, double *buf, uint32_t ring_cap, uint32_t stride, uint32_t k,
                      uint32_t window, double ewma_alpha)
{
    rtk_ring_init(&s->ring, buf, ring_cap, stride);
    s->k = k > RTK_ROLLING_MAX_SERIES ? RTK_ROLLING_MAX_SERIES : k;
    s->window = window < 1 ? 1 : (window > ring_cap ? ring_cap : window);
    s->inv_window = 1.0 / s->window;
    s->n = 0;
    s->since_exact = 0;
    s->alpha = ewma_alpha;
    for (uint32_t j = 0; j < RTK_ROLLING_MAX_SERIES; j++) {
        s->mean[j] = s->m2[j] = s->ewma[j] = s->last[j] = s->z[j] = 0.0;
        s->run[j] = 0;
    }
}

static void exact_moments(rtk_rolling *s)
{
    uint64_t first = s->ring.pushed - s->n;
    for (uint32_t j = 0; j < s->k; j++) {
        double sum = 0.0, m2 = 0.0;
        for (uint64_t q = first; q < s->ring.pushed; q++)
            sum += rtk_ring_at(&s->ring, q, j);
        double mean = sum / s->n;
        for (uint64_t q = first; q < s->ring.pushed; q++) {
            double d = rtk_ring_at(&s->ring, q, j) - mean;
            m2 += d * d;
        }
        s->mean[j] = mean;
        s->m2[j] = m2;
    }
}

void rtk_rolling_push(rtk_rolling *s, const double *x)
{
    const uint32_t k = s->k;
    const double inv_prev = s->n < 2 ? 0.0 : 1.0 / (s->n - 1);
    for (uint32_t j = 0; j < k; j++) {
        double var = s->m2[j] * inv_prev;
        s->z[j] = var > 0.0 ? (x[j] - s->mean[j]) / sqrt(var) : 0.0;
    }

    double *row = rtk_ring_next_row(&s->ring);
    int first = s->ring.pushed == 0;
    if (s->n < s->window) {
        s->n++;
        const double inv_n = 1.0 / s->n;
        for (uint32_t j = 0; j < k; j++) {
            double d = x[j] - s->mean[j];
            s->mean[j] += d * inv_n;
            s->m2[j] += d * (x[j] - s->mean[j]);
        }
    } else {
        const uint64_t oldest = s->ring.pushed - s->window;
        for (uint32_t j = 0; j < k; j++) {
            double old = rtk_ring_at(&s->ring, oldest, j);
            double old_mean = s->mean[j];
            s->mean[j] += (x[j] - old) * s->inv_window;
            double m2 = s->m2[j] + (x[j] - old) * (x[j] - s->mean[j] + old - old_mean);
            s->m2[j] = m2 > 0.0 ? m2 : 0.0;
        }
    }
    for (uint32_t j = 0; j < k; j++)
        row[j] = x[j];
    s->ring.pushed++;
    if (s->n == s->window && ++s->since_exact >= s->window) {
        s->since_exact = 0;
        exact_moments(s);
    }
    for (uint32_t j = 0; j < k; j++) {
        s->run[j] = (!first && x[j] == s->last[j]) ? s->run[j] + 1 : 1;
        if (s->run[j] >= s->n) {
            s->mean[j] = x[j];
            s->m2[j] = 0.0;
        }
        s->ewma[j] = first ? x[j] : s->ewma[j] + s->alpha * (x[j] - s->ewma[j]);
        s->last[j] = x[j];
    }
}

double rtk_rolling_var(const rtk_rolling *s, uint32_t j)
{
    return s->n < 2 ? 0.0 : s->m2[j] / (s->n - 1);
}

double rtk_rolling_std(const rtk_rolling *s, uint32_t j)
{
    return sqrt(rtk_rolling_var(s, j));
}

/* The window's extreme: the smallest value when sign is +1, the largest when -1. */
static double rolling_extreme(const rtk_rolling *s, uint32_t j, double sign)
{
    if (s->n == 0)
        return 0.0;
    double m = s->last[j];
    for (uint64_t q = s->ring.pushed - s->n; q < s->ring.pushed; q++) {
        double x = rtk_ring_at(&s->ring, q, j);
        m = sign * x < sign * m ? x : m;
    }
    return m;
}

double rtk_rolling_min(const rtk_rolling *s, uint32_t j)
{
    return rolling_extreme(s, j, 1.0);
}

double rtk_rolling_max(const rtk_rolling *s, uint32_t j)
{
    return rolling_extreme(s, j, -1.0);
}

/* Hoare-style quickselect: puts the k-th smallest at v[k]. Median-of-three
   pivots keep sorted and constant windows (common in traffic) linear. */
static double select_kth(double *v, uint32_t n, uint32_t k)
{
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        double a = v[lo], b = v[mid], c = v[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        uint32_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                double t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    return v[k];
}

double rtk_quantile(double *v, uint32_t n, double q)
{
    if (n == 0)
        return 0.0;
    if (q <= 0.0)
        q = 0.0;
    if (q >= 1.0)
        q = 1.0;
    double pos = q * (n - 1);
    uint32_t k = (uint32_t)pos;
    double frac = pos - k;
    double lo = select_kth(v, n, k);
    if (frac == 0.0 || k + 1 >= n)
        return lo;
    /* After selection v[k+1..n) are all >= v[k]; the next order statistic is their minimum. */
    double hi = v[k + 1];
    for (uint32_t i = k + 2; i < n; i++)
        if (v[i] < hi)
            hi = v[i];
    return lo + frac * (hi - lo);
}

void rtk_median_mad(double *v, uint32_t n, double *median, double *mad)
{
    if (n == 0) {
        *median = *mad = 0.0;
        return;
    }
    double med = rtk_quantile(v, n, 0.5);
    for (uint32_t i = 0; i < n; i++)
        v[i] = fabs(v[i] - med);
    *median = med;
    *mad = rtk_quantile(v, n, 0.5);
}

void rtk_rolling_summary(const rtk_rolling *s, uint32_t j, uint32_t n, double *scratch, rtk_summary *out)
{
    uint32_t avail = rtk_ring_count(&s->ring);
    if (n == 0 || n > avail)
        n = n == 0 ? s->n : avail;
    out->n = n;
    out->ewma = s->ewma[j];
    if (n == 0) {
        out->mean = out->std = out->min = out->max = 0.0;
        out->p50 = out->p95 = out->p99 = out->median = out->mad = 0.0;
        return;
    }
    rtk_ring_copy_last(&s->ring, j, n, scratch);
    double sum = 0.0, mn = scratch[0], mx = scratch[0];
    for (uint32_t i = 0; i < n; i++) {
        double x = scratch[i];
        sum += x;
        mn = x < mn ? x : mn;
        mx = x > mx ? x : mx;
    }
    double mean = sum / n, m2 = 0.0;
    for (uint32_t i = 0; i < n; i++)
        m2 += (scratch[i] - mean) * (scratch[i] - mean);
    out->mean = mean;
    out->std = n > 1 ? sqrt(m2 / (n - 1)) : 0.0;
    out->min = mn;
    out->max = mx;
    /* Each quantile reorders the scratch copy; order statistics survive that. */
    out->p50 = rtk_quantile(scratch, n, 0.50);
    out->p95 = rtk_quantile(scratch, n, 0.95);
    out->p99 = rtk_quantile(scratch, n, 0.99);
    rtk_median_mad(scratch, n, &out->median, &out->mad);
}
