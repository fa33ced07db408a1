#include "ring.h"

#include <string.h>

uint32_t rtk_ring_capacity(uint32_t wanted)
{
    uint32_t cap = 1;
    while (cap < wanted && cap < (1u << 31))
        cap <<= 1;
    return cap;
}

void rtk_ring_init(rtk_ring *r, double *buf, uint32_t cap)
{
    r->buf = buf;
    r->mask = cap - 1;
    r->pushed = 0;
}

uint32_t rtk_ring_copy_last(const rtk_ring *r, uint32_t n, double *out)
{
    uint32_t count = rtk_ring_count(r);
    if (n > count)
        n = count;
    uint64_t first = r->pushed - n;
    uint32_t start = (uint32_t)(first & r->mask);
    uint32_t head = rtk_ring_cap(r) - start;
    if (head >= n) {
        memcpy(out, r->buf + start, n * sizeof *out);
    } else {
        memcpy(out, r->buf + start, head * sizeof *out);
        memcpy(out + head, r->buf, (n - head) * sizeof *out);
    }
    return n;
}
