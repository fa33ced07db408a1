#include "sortwin.h"

#include <string.h>

void rtk_sortwin_init(rtk_sortwin *w, double *buf, uint32_t capacity)
{
    w->sorted = buf;
    w->fifo = buf + capacity;
    w->cap = capacity;
    rtk_sortwin_clear(w);
}

void rtk_sortwin_clear(rtk_sortwin *w)
{
    w->n = w->head = 0;
}

/* First index whose value is >= x (lower bound). Branch-free halving: the comparison
   picks the half without a jump the processor could mispredict on noisy data. */
static uint32_t lower_bound(const double *v, uint32_t n, double x)
{
    if (n == 0)
        return 0;
    const double *base = v;
    while (n > 1) {
        uint32_t half = n / 2;
        base = base[half - 1] < x ? base + half : base;
        n -= half;
    }
    return (uint32_t)(base - v) + (*base < x);
}

void rtk_sortwin_push(rtk_sortwin *w, double x)
{
    uint32_t tail = w->head; /* the oldest value's slot once full, else the next free one */
    uint32_t j = lower_bound(w->sorted, w->n, x);
    if (w->n == w->cap) {
        /* The new value replaces the oldest: only the values between their places move, one
           step towards the oldest's. The stored copy is bit-identical, so the lower bound
           finds it exactly. */
        uint32_t i = lower_bound(w->sorted, w->n, w->fifo[tail]);
        if (j > i) {
            memmove(w->sorted + i, w->sorted + i + 1, (j - 1 - i) * sizeof(double));
            j--;
        } else {
            memmove(w->sorted + j + 1, w->sorted + j, (i - j) * sizeof(double));
        }
    } else {
        memmove(w->sorted + j + 1, w->sorted + j, (w->n - j) * sizeof(double));
        w->n++;
    }
    w->sorted[j] = x;
    w->fifo[tail] = x;
    w->head = tail + 1 == w->cap ? 0 : tail + 1;
}

double rtk_sortwin_median(const rtk_sortwin *w)
{
    if (w->n == 0)
        return 0.0;
    uint32_t h = w->n / 2;
    return w->n & 1 ? w->sorted[h] : 0.5 * (w->sorted[h - 1] + w->sorted[h]);
}

/* The distances |x - m| in ascending order are two sorted runs: below[i] =
   m - sorted[p-1-i] for the p values under m, and above[i] = sorted[p+i] - m
   for the rest. The k-th smallest of two sorted runs is a binary search over
   how many come from the first run. */
static double below(const rtk_sortwin *w, uint32_t p, double m, uint32_t i) { return m - w->sorted[p - 1 - i]; }
static double above(const rtk_sortwin *w, uint32_t p, double m, uint32_t i) { return w->sorted[p + i] - m; }

static double kth_distance(const rtk_sortwin *w, uint32_t p, double m, uint32_t k)
{
    uint32_t a = p, b = w->n - p;
    uint32_t lo = k + 1 > b ? k + 1 - b : 0, hi = k + 1 < a ? k + 1 : a;
    for (;;) {
        uint32_t i = lo + (hi - lo) / 2, j = k + 1 - i; /* i from below, j from above */
        if (i < a && j > 0 && above(w, p, m, j - 1) > below(w, p, m, i))
            lo = i + 1;
        else if (i > 0 && j < b && below(w, p, m, i - 1) > above(w, p, m, j))
            hi = i - 1;
        else {
            double x = i > 0 ? below(w, p, m, i - 1) : 0.0, y = j > 0 ? above(w, p, m, j - 1) : 0.0;
            return x > y ? x : y;
        }
    }
}

double rtk_sortwin_mad(const rtk_sortwin *w, double median)
{
    if (w->n == 0)
        return 0.0;
    uint32_t p = lower_bound(w->sorted, w->n, median), h = w->n / 2;
    if (w->n & 1)
        return kth_distance(w, p, median, h);
    return 0.5 * (kth_distance(w, p, median, h - 1) + kth_distance(w, p, median, h));
}

double rtk_sortwin_quantile(const rtk_sortwin *w, double q)
{
    if (w->n == 0)
        return 0.0;
    return w->sorted[(uint32_t)(q * (w->n - 1))];
}
