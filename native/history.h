/* Multi-resolution history of one metric in fixed memory.
 *
 * Three tiers of buckets, each a preallocated ring: by default 1 s buckets for an
 * hour, 1 min for 7 days and 1 h for 90 days. A sample updates the bucket it
 * falls in on every tier at once, so a coarse bucket always holds the min, mean
 * and max of everything in it (a spike is not averaged away) and the largest
 * anomaly score seen in it. Buckets nothing fell into read as NaN (missing).
 * Samples must come in time order; an older one is refused.
 */
#ifndef RTK_HISTORY_H
#define RTK_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define RTK_HIST_TIERS 3

typedef struct {
    float min, mean, max, score;
} rtk_hbucket;

typedef struct {
    uint32_t cap[RTK_HIST_TIERS];   /* buckets kept per tier */
    int64_t step[RTK_HIST_TIERS];   /* seconds per bucket */
    rtk_hbucket *tier[RTK_HIST_TIERS];
    int64_t last[RTK_HIST_TIERS];   /* bucket number (t / step) of the newest bucket */
    double sum[RTK_HIST_TIERS];     /* exact running sum and count of the newest bucket */
    uint32_t n[RTK_HIST_TIERS];
    uint64_t samples;
} rtk_history;

size_t rtk_history_arena_size(const uint32_t cap[RTK_HIST_TIERS]);

/* Steps must grow and each must divide the next. Returns 0, or -1 for a bad shape. */
int rtk_history_init(rtk_history *h, void *arena, const uint32_t cap[RTK_HIST_TIERS],
                     const int64_t step[RTK_HIST_TIERS]);

/* Adds a sample at Unix time t (seconds). NaN values are ignored (0). Returns 0,
   or -1 when t is older than the newest sample's bucket on the finest tier. */
int rtk_history_push(rtk_history *h, int64_t t, float value, float score);

/* Copies buckets number `from`..`to` (inclusive, numbers are t / step) of one tier,
   NaN where missing or no longer kept. Returns how many were written (to - from + 1). */
uint32_t rtk_history_read(const rtk_history *h, int tier, int64_t from, int64_t to, rtk_hbucket *out);

/* Persistence in host byte order (a device reads back what it wrote). The layout:
   magic "RTKH", version, a byte-order mark, the shape, the state, the tiers. */
size_t rtk_history_serialized_size(const rtk_history *h);
void rtk_history_serialize(const rtk_history *h, uint8_t *out);

#define RTK_HIST_ESHORT   (-1) /* length does not match the shape */
#define RTK_HIST_EMAGIC   (-2) /* not a history */
#define RTK_HIST_EVERSION (-3) /* written by another format version */
#define RTK_HIST_EORDER   (-4) /* written on a machine of the other byte order */
#define RTK_HIST_ESHAPE   (-5) /* tiers of another size or step than this history's */

/* Restores state written by rtk_history_serialize into a history of the same shape. */
int rtk_history_deserialize(rtk_history *h, const uint8_t *in, size_t len);

#endif
