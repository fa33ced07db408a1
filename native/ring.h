/* A preallocated ring of rows of doubles, indexed by a running sequence number.
 * Capacity is a power of two so a position is a mask, not a division. Rows
 * are `stride` doubles apart and a row holds one value of each of several
 * series (columns): the sampler interleaves all its series time-major, so one
 * tick writes one contiguous stretch of memory. */
#ifndef RTK_RING_H
#define RTK_RING_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double *buf;     /* caller-owned storage of cap * stride doubles */
    uint32_t mask;   /* cap - 1 */
    uint32_t stride; /* doubles from one row to the next */
    uint64_t pushed; /* rows ever pushed; the newest has sequence pushed - 1 */
} rtk_ring;

/* Smallest power of two >= wanted: the row count a caller must provide. */
uint32_t rtk_ring_capacity(uint32_t wanted);

void rtk_ring_init(rtk_ring *r, double *buf, uint32_t cap, uint32_t stride);

static inline uint32_t rtk_ring_cap(const rtk_ring *r) { return r->mask + 1; }

static inline uint32_t rtk_ring_count(const rtk_ring *r)
{
    return r->pushed < (uint64_t)r->mask + 1 ? (uint32_t)r->pushed : r->mask + 1;
}

/* The row that the next push fills. */
static inline double *rtk_ring_next_row(const rtk_ring *r)
{
    return r->buf + (size_t)(r->pushed & r->mask) * r->stride;
}

/* Pushes a row of one column. */
static inline void rtk_ring_push_value(rtk_ring *r, double x)
{
    *rtk_ring_next_row(r) = x;
    r->pushed++;
}

/* Value of column `col` in the row with sequence `seq` (within the last cap pushes). */
static inline double rtk_ring_at(const rtk_ring *r, uint64_t seq, uint32_t col)
{
    return r->buf[(size_t)(seq & r->mask) * r->stride + col];
}

/* Copies column `col` of the newest n rows (n <= count), oldest first. Returns n. */
uint32_t rtk_ring_copy_last(const rtk_ring *r, uint32_t col, uint32_t n, double *out);

#endif
