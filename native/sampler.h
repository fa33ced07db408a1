/* The per-tick pipeline: counter snapshot -> deltas -> rates -> rolling
 * statistics and z-scores, for every link, in one call and one preallocated
 * arena. Each link gets a slot for one continuous lifetime: a link that
 * vanishes keeps its slot (state GONE, totals kept for the report); if its
 * ifindex shows up again it gets a new slot. */
#ifndef RTK_SAMPLER_H
#define RTK_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "counters.h"
#include "stats.h"

/* One rate series per counter, in the order of enum rtk_counter (per second). */
#define RTK_NMETRICS RTK_NCOUNTERS

enum rtk_slot_state { RTK_SLOT_EMPTY = 0, RTK_SLOT_ACTIVE = 1, RTK_SLOT_GONE = 2 };

typedef struct {
    int32_t ifindex;
    char name[RTK_IFNAMSIZ];
    uint8_t state;
    uint64_t first_tick; /* tick at which the link was first seen (no rate yet) */
    uint64_t last_tick;  /* last tick at which it was seen */
    uint64_t prev[RTK_NCOUNTERS];
    uint64_t total[RTK_NCOUNTERS]; /* sum of deltas since first seen */
    uint32_t wraps, resets;
    rtk_rolling rate; /* one series per metric, in METRICS order */
} rtk_slot;

typedef struct {
    int cap;           /* slots */
    int nslots;        /* slots ever used */
    uint32_t history;  /* ring capacity per series (power of two) */
    uint32_t window;   /* rolling-statistics window */
    double alpha;      /* EWMA gain of every series */
    rtk_slot *slots;
    rtk_link *snap;    /* RTK_MAX_LINKS entries: the last snapshot */
    /* Where each snapshot position went last tick (links come in a stable
       order): its ifindex and slot, or -1 for a link the filter ignores. */
    int32_t *pos_ifindex, *pos_slot;
    rtk_name *track;   /* names to track (cap entries); none set: every link */
    int ntrack;
    rtk_ring times;    /* monotonic time of each tick */
    uint64_t ticks;    /* ticks ingested */
    double prev_t;
    int overflow;      /* links seen that found no free slot, last tick */
    int appeared, vanished; /* during the last tick */
} rtk_sampler;

/* Bytes of arena rtk_sampler_init needs (suitably aligned, e.g. from malloc). */
size_t rtk_sampler_arena_size(int cap, uint32_t history);

void rtk_sampler_init(rtk_sampler *s, void *arena, int cap, uint32_t history, uint32_t window,
                      double ewma_alpha);

/* Tracks only links with these names (at most cap); n = 0 tracks every link.
   `names` holds n names of RTK_IFNAMSIZ bytes each. Call before the first tick. */
void rtk_sampler_track(rtk_sampler *s, const char *names, int n);

/* Ingests a snapshot of n links taken at monotonic time t (seconds). */
void rtk_sampler_ingest(rtk_sampler *s, const rtk_link *links, int n, double t);

/* Reads the kernel counters and ingests them; returns links read or -errno. */
int rtk_sampler_tick(rtk_sampler *s, rtk_reader *r);

/* Monotonic seconds (CLOCK_MONOTONIC). */
double rtk_monotonic(void);

/* Rate sample of `slot` for `metric` at global tick `tick`, if the slot has one
   still in its ring. Returns 1 and sets *v, else 0. */
int rtk_sampler_value_at(const rtk_sampler *s, int slot, int metric, uint64_t tick, double *v);

/* out[j] = sum over the given slots of their rate at tick from + j (slots
   without a sample at that tick add nothing). */
void rtk_sampler_sum_series(const rtk_sampler *s, const int *slots, int nslots, int metric,
                            uint64_t from, uint32_t n, double *out);

#endif
