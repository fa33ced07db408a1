#include "stats.h"

#include <math.h>

void rtk_rolling_init(rtk_rolling *s, double *ring_buf, uint32_t ring_cap,
                      uint64_t *deque_buf, uint32_t window, double ewma_alpha)
{
    rtk_ring_init(&s->ring, ring_buf, ring_cap);
    s->window = window < 1 ? 1 : (window > ring_cap ? ring_cap : window);
    s->n = 0;
    s->since_exact = 0;
    s->mean = s->m2 = 0.0;
    s->ewma = 0.0;
    s->alpha = ewma_alpha;
    s->last = s->last_z = 0.0;
    s->qcap = s->window + 1;
    s->minq = deque_buf;
    s->maxq = deque_buf + s->qcap;
    s->min_head = s->min_len = s->max_head = s->max_len = 0;
}

/* Deques hold sequence numbers in a circular array of qcap slots. */
static inline uint64_t dq_get(const uint64_t *q, uint32_t qcap, uint32_t head, uint32_t i)
{
    uint32_t pos = head + i;
    return q[pos >= qcap ? pos - qcap : pos];
}

static inline void dq_push(uint64_t *q, uint32_t qcap, uint32_t head, uint32_t *len, uint64_t v)
{
    uint32_t pos = head + *len;
    q[pos >= qcap ? pos - qcap : pos] = v;
    (*len)++;
}

static void exact_moments(rtk_rolling *s)
{
    double sum = 0.0;
    uint64_t first = s->ring.pushed - s->n;
    for (uint64_t q = first; q < s->ring.pushed; q++)
        sum += rtk_ring_at(&s->ring, q);
    double mean = sum / s->n, m2 = 0.0;
    for (uint64_t q = first; q < s->ring.pushed; q++) {
        double d = rtk_ring_at(&s->ring, q) - mean;
        m2 += d * d;
    }
    s->mean = mean;
    s->m2 = m2;
}

double rtk_rolling_push(rtk_rolling *s, double x)
{
    double sd = rtk_rolling_std(s);
    double z = sd > 0.0 ? (x - s->mean) / sd : 0.0;

    uint64_t seq = s->ring.pushed;
    if (s->n < s->window) {
        s->n++;
        double d = x - s->mean;
        s->mean += d / s->n;
        s->m2 += d * (x - s->mean);
        rtk_ring_push(&s->ring, x);
    } else {
        double old = rtk_ring_at(&s->ring, seq - s->window);
        double old_mean = s->mean;
        s->mean += (x - old) / s->window;
        s->m2 += (x - old) * (x - s->mean + old - old_mean);
        if (s->m2 < 0.0)
            s->m2 = 0.0;
        rtk_ring_push(&s->ring, x);
        if (++s->since_exact >= s->window) {
            s->since_exact = 0;
            exact_moments(s);
        }
    }

    uint64_t oldest = seq + 1 - s->n;
    if (s->min_len && dq_get(s->minq, s->qcap, s->min_head, 0) < oldest) {
        s->min_head = s->min_head + 1 == s->qcap ? 0 : s->min_head + 1;
        s->min_len--;
    }
    while (s->min_len && rtk_ring_at(&s->ring, dq_get(s->minq, s->qcap, s->min_head, s->min_len - 1)) >= x)
        s->min_len--;
    dq_push(s->minq, s->qcap, s->min_head, &s->min_len, seq);

    if (s->max_len && dq_get(s->maxq, s->qcap, s->max_head, 0) < oldest) {
        s->max_head = s->max_head + 1 == s->qcap ? 0 : s->max_head + 1;
        s->max_len--;
    }
    while (s->max_len && rtk_ring_at(&s->ring, dq_get(s->maxq, s->qcap, s->max_head, s->max_len - 1)) <= x)
        s->max_len--;
    dq_push(s->maxq, s->qcap, s->max_head, &s->max_len, seq);

    s->ewma = seq == 0 ? x : s->ewma + s->alpha * (x - s->ewma);
    s->last = x;
    s->last_z = z;
    return z;
}

double rtk_rolling_var(const rtk_rolling *s)
{
    return s->n < 2 ? 0.0 : s->m2 / (s->n - 1);
}

double rtk_rolling_std(const rtk_rolling *s)
{
    return sqrt(rtk_rolling_var(s));
}

double rtk_rolling_min(const rtk_rolling *s)
{
    return s->min_len ? rtk_ring_at(&s->ring, dq_get(s->minq, s->qcap, s->min_head, 0)) : 0.0;
}

double rtk_rolling_max(const rtk_rolling *s)
{
    return s->max_len ? rtk_ring_at(&s->ring, dq_get(s->maxq, s->qcap, s->max_head, 0)) : 0.0;
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

void rtk_rolling_summary(const rtk_rolling *s, uint32_t n, double *scratch, rtk_summary *out)
{
    uint32_t avail = rtk_ring_count(&s->ring);
    if (n == 0 || n > avail)
        n = n == 0 ? s->n : avail;
    out->n = n;
    out->ewma = s->ewma;
    if (n == 0) {
        out->mean = out->std = out->min = out->max = 0.0;
        out->p50 = out->p95 = out->p99 = out->median = out->mad = 0.0;
        return;
    }
    rtk_ring_copy_last(&s->ring, n, scratch);
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
