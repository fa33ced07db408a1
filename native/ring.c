#include "ring.h"

uint32_t rtk_ring_capacity(uint32_t wanted)
{
    uint32_t cap = 1;
    while (cap < wanted && cap < (1u << 31))
        cap <<= 1;
    return cap;
}

void rtk_ring_init(rtk_ring *r, double *buf, uint32_t cap, uint32_t stride)
{
    r->buf = buf;
    r->mask = cap - 1;
    r->stride = stride;
    r->pushed = 0;
}

uint32_t rtk_ring_copy_last(const rtk_ring *r, uint32_t col, uint32_t n, double *out)
{
    uint32_t count = rtk_ring_count(r);
    if (n > count)
        n = count;
    uint64_t first = r->pushed - n;
    for (uint32_t i = 0; i < n; i++)
        out[i] = rtk_ring_at(r, first + i, col);
    return n;
}
