/* A sliding window kept sorted, for robust statistics per sample: the median
 * in O(1) and the median absolute deviation (MAD) in O(log n), at the cost of
 * one memmove on each push (a few hundred bytes for the usual window sizes).
 * Memory is the caller's: 2 * capacity doubles. NaN must not be pushed. */
#ifndef RTK_SORTWIN_H
#define RTK_SORTWIN_H

#include <stdint.h>

typedef struct {
    double *sorted; /* the window in ascending order */
    double *fifo;   /* the window in arrival order (a ring) */
    uint32_t cap, n, head;
} rtk_sortwin;

void rtk_sortwin_init(rtk_sortwin *w, double *buf, uint32_t capacity);
void rtk_sortwin_clear(rtk_sortwin *w);
/* Adds x, dropping the oldest value once the window is full. */
void rtk_sortwin_push(rtk_sortwin *w, double x);
double rtk_sortwin_median(const rtk_sortwin *w);     /* 0 when empty */
double rtk_sortwin_mad(const rtk_sortwin *w, double median); /* median |x - median|; 0 when empty */
/* The value with a share q of the window at or below it (nearest rank, rounding down); 0 when empty. */
double rtk_sortwin_quantile(const rtk_sortwin *w, double q);

#endif
