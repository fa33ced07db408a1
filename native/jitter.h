/* Delay variation: RFC 3550 interarrival jitter and the mean/max absolute
 * difference between consecutive delays (IPDV, RFC 3393 style). Delays are
 * one-way transit times or round-trip times, in any one unit. */
#ifndef RTK_JITTER_H
#define RTK_JITTER_H

#include <stdint.h>

typedef struct {
    double jitter;   /* RFC 3550 J, smoothed with gain 1/16 */
    double prev;     /* previous delay */
    double ipdv_sum, ipdv_max;
    uint64_t n;      /* delays seen */
} rtk_jitter;

void rtk_jitter_init(rtk_jitter *j);
/* Feeds the next delay, in arrival order. */
void rtk_jitter_update(rtk_jitter *j, double delay);
/* Mean absolute delay variation between consecutive delays; 0 before two delays. */
double rtk_jitter_ipdv_mean(const rtk_jitter *j);

#endif
