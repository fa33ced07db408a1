#include "jitter.h"

#include <math.h>

void rtk_jitter_init(rtk_jitter *j)
{
    j->jitter = j->prev = j->ipdv_sum = j->ipdv_max = 0.0;
    j->n = 0;
}

void rtk_jitter_update(rtk_jitter *j, double delay)
{
    if (j->n > 0) {
        /* RFC 3550 6.4.1: D(i-1,i) = (Rj - Ri) - (Sj - Si), the change in transit time. */
        double d = fabs(delay - j->prev);
        j->jitter += (d - j->jitter) / 16.0;
        j->ipdv_sum += d;
        if (d > j->ipdv_max)
            j->ipdv_max = d;
    }
    j->prev = delay;
    j->n++;
}

double rtk_jitter_ipdv_mean(const rtk_jitter *j)
{
    return j->n > 1 ? j->ipdv_sum / (double)(j->n - 1) : 0.0;
}
