#include "sampler.h"

#include <string.h>
#include <time.h>

#include "delta.h"

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }


/* Arena layout: slots | snapshot | position cache | track names | tick times | series.
   The series block is time-major: row k holds sample k of every slot and metric. */
static size_t fixed_bytes(int cap, uint32_t ring_cap)
{
    return align8((size_t)cap * sizeof(rtk_slot)) + align8(RTK_MAX_LINKS * sizeof(rtk_link)) +
           2 * align8(RTK_MAX_LINKS * sizeof(int32_t)) + align8((size_t)cap * sizeof(rtk_name)) +
           align8(ring_cap * sizeof(double));
}

size_t rtk_sampler_arena_size(int cap, uint32_t history)
{
    uint32_t ring_cap = rtk_ring_capacity(history);
    return fixed_bytes(cap, ring_cap) + (size_t)ring_cap * cap * RTK_NMETRICS * sizeof(double);
}

static char *series_base(const rtk_sampler *s)
{
    return (char *)s->slots + fixed_bytes(s->cap, s->history);
}

static void slot_open(rtk_sampler *s, int idx, const rtk_link *l)
{
    rtk_slot *slot = &s->slots[idx];
    double *column = (double *)series_base(s) + (size_t)idx * RTK_NMETRICS;
    uint32_t row = (uint32_t)s->cap * RTK_NMETRICS;
    memset(slot, 0, sizeof *slot);
    slot->ifindex = l->ifindex;
    memcpy(slot->name, l->name, RTK_IFNAMSIZ);
    slot->state = RTK_SLOT_ACTIVE;
    slot->first_tick = slot->last_tick = s->ticks;
    memcpy(slot->prev, l->c, sizeof slot->prev);
    rtk_rolling_init(&slot->rate, column, s->history, row, RTK_NMETRICS, s->window, s->alpha);
}

void rtk_sampler_init(rtk_sampler *s, void *arena, int cap, uint32_t history, uint32_t window,
                      double ewma_alpha)
{
    s->cap = cap;
    s->nslots = 0;
    s->history = rtk_ring_capacity(history);
    s->window = window > s->history ? s->history : (window < 1 ? 1 : window);
    char *p = arena;
    s->slots = (rtk_slot *)p;
    p += align8((size_t)cap * sizeof(rtk_slot));
    s->snap = (rtk_link *)p;
    p += align8(RTK_MAX_LINKS * sizeof(rtk_link));
    s->pos_ifindex = (int32_t *)p;
    p += align8(RTK_MAX_LINKS * sizeof(int32_t));
    s->pos_slot = (int32_t *)p;
    p += align8(RTK_MAX_LINKS * sizeof(int32_t));
    s->track = (rtk_name *)p;
    p += align8((size_t)cap * sizeof(rtk_name));
    rtk_ring_init(&s->times, (double *)p, s->history, 1);
    s->ntrack = 0;
    for (int i = 0; i < RTK_MAX_LINKS; i++)
        s->pos_ifindex[i] = 0; /* no link has ifindex 0: every position starts unknown */
    s->ticks = 0;
    s->prev_t = 0.0;
    s->overflow = s->appeared = s->vanished = 0;
    s->alpha = ewma_alpha;
    memset(s->slots, 0, (size_t)cap * sizeof(rtk_slot));
}

void rtk_sampler_track(rtk_sampler *s, const char *names, int n)
{
    s->ntrack = n < s->cap ? n : s->cap;
    for (int i = 0; i < s->ntrack; i++) {
        memcpy(s->track[i].name, names + (size_t)i * RTK_IFNAMSIZ, RTK_IFNAMSIZ);
        s->track[i].name[RTK_IFNAMSIZ - 1] = 0;
    }
}

static int tracked(const rtk_sampler *s, const char *name)
{
    if (s->ntrack == 0)
        return 1;
    for (int i = 0; i < s->ntrack; i++)
        if (strncmp(s->track[i].name, name, RTK_IFNAMSIZ) == 0)
            return 1;
    return 0;
}

static int find_slot(const rtk_sampler *s, int32_t ifindex)
{
    for (int i = 0; i < s->nslots; i++)
        if (s->slots[i].state == RTK_SLOT_ACTIVE && s->slots[i].ifindex == ifindex)
            return i;
    return -1;
}

#define RTK_IGNORED (-1)

/* Slot of the link at snapshot position pos: the position cache first, then a
   scan, then a new slot. Returns RTK_IGNORED for untracked or unplaceable links. */
static int slot_for(rtk_sampler *s, const rtk_link *l, int pos, int *is_new)
{
    *is_new = 0;
    if (s->pos_ifindex[pos] == l->ifindex) {
        int cached = s->pos_slot[pos];
        if (cached == RTK_IGNORED ||
            (s->slots[cached].state == RTK_SLOT_ACTIVE && s->slots[cached].ifindex == l->ifindex))
            return cached;
    }
    int idx = find_slot(s, l->ifindex);
    if (idx < 0) {
        if (!tracked(s, l->name)) {
            idx = RTK_IGNORED;
        } else if (s->nslots >= s->cap) {
            s->overflow++;
            return RTK_IGNORED; /* not cached: a slot may never free, but count it each tick */
        } else {
            idx = s->nslots++;
            slot_open(s, idx, l);
            *is_new = 1;
        }
    }
    s->pos_ifindex[pos] = l->ifindex;
    s->pos_slot[pos] = idx;
    return idx;
}

void rtk_sampler_ingest(rtk_sampler *s, const rtk_link *links, int n, double t)
{
    /* A snapshot no later than the previous one has no interval to rate over. */
    if (s->ticks && t <= s->prev_t)
        return;
    double dt = s->ticks ? t - s->prev_t : 0.0;
    s->overflow = s->appeared = s->vanished = 0;
    for (int i = 0; i < n; i++) {
        const rtk_link *l = &links[i];
        int is_new;
        int idx = i < RTK_MAX_LINKS ? slot_for(s, l, i, &is_new) : RTK_IGNORED;
        if (idx == RTK_IGNORED)
            continue;
        if (is_new) {
            s->appeared++;
            continue;
        }
        rtk_slot *slot = &s->slots[idx];
        memcpy(slot->name, l->name, RTK_IFNAMSIZ); /* renames keep the ifindex */
        slot->last_tick = s->ticks;
        uint64_t d[RTK_NCOUNTERS];
        int kind = rtk_link_deltas(slot->prev, l->c, d);
        slot->resets += kind == RTK_DELTA_RESET;
        slot->wraps += kind == RTK_DELTA_WRAP32;
        double inv_dt = 1.0 / dt, rates[RTK_NMETRICS];
        for (int m = 0; m < RTK_NMETRICS; m++) {
            slot->total[m] += d[m];
            rates[m] = (double)d[m] * inv_dt;
        }
        rtk_rolling_push(&slot->rate, rates);
        memcpy(slot->prev, l->c, sizeof slot->prev);
    }
    for (int i = 0; i < s->nslots; i++) {
        rtk_slot *slot = &s->slots[i];
        if (slot->state == RTK_SLOT_ACTIVE && slot->last_tick != s->ticks) {
            slot->state = RTK_SLOT_GONE;
            s->vanished++;
        }
    }
    rtk_ring_push_value(&s->times, t);
    s->prev_t = t;
    s->ticks++;
}

double rtk_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rtk_sampler_tick(rtk_sampler *s, rtk_reader *r)
{
    int n = rtk_reader_read(r, s->snap, RTK_MAX_LINKS);
    if (n < 0)
        return n;
    rtk_sampler_ingest(s, s->snap, n, rtk_monotonic());
    return n;
}

int rtk_sampler_value_at(const rtk_sampler *s, int slot, int metric, uint64_t tick, double *v)
{
    const rtk_slot *sl = &s->slots[slot];
    const rtk_rolling *st = &sl->rate;
    /* The k-th rate sample of a slot (0-based) belongs to tick first_tick + 1 + k. */
    if (tick <= sl->first_tick)
        return 0;
    uint64_t k = tick - sl->first_tick - 1;
    uint64_t pushed = st->ring.pushed;
    if (k >= pushed || pushed - k > rtk_ring_cap(&st->ring))
        return 0;
    *v = rtk_ring_at(&st->ring, k, (uint32_t)metric);
    return 1;
}

void rtk_sampler_sum_series(const rtk_sampler *s, const int *slots, int nslots, int metric,
                            uint64_t from, uint32_t n, double *out)
{
    for (uint32_t j = 0; j < n; j++) {
        double sum = 0.0, v;
        for (int i = 0; i < nslots; i++)
            if (rtk_sampler_value_at(s, slots[i], metric, from + j, &v))
                sum += v;
        out[j] = sum;
    }
}
