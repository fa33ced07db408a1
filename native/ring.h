/* A preallocated ring of doubles, indexed by a running sequence number.
 * Capacity is a power of two so a position is a mask, not a division. */
#ifndef RTK_RING_H
#define RTK_RING_H

#include <stdint.h>

typedef struct {
    double *buf;     /* caller-owned storage of `cap` doubles */
    uint32_t mask;   /* cap - 1 */
    uint64_t pushed; /* values ever pushed; the newest has sequence pushed - 1 */
} rtk_ring;

/* Smallest power of two >= wanted: the storage a caller must provide. */
uint32_t rtk_ring_capacity(uint32_t wanted);

void rtk_ring_init(rtk_ring *r, double *buf, uint32_t cap);

static inline uint32_t rtk_ring_cap(const rtk_ring *r) { return r->mask + 1; }

static inline uint32_t rtk_ring_count(const rtk_ring *r)
{
    return r->pushed < (uint64_t)r->mask + 1 ? (uint32_t)r->pushed : r->mask + 1;
}

static inline void rtk_ring_push(rtk_ring *r, double x)
{
    r->buf[r->pushed & r->mask] = x;
    r->pushed++;
}

/* Value with sequence `seq` (caller keeps seq within the last cap pushes). */
static inline double rtk_ring_at(const rtk_ring *r, uint64_t seq)
{
    return r->buf[seq & r->mask];
}

/* Copies the newest n values (n <= count), oldest first. Returns n. */
uint32_t rtk_ring_copy_last(const rtk_ring *r, uint32_t n, double *out);

#endif
