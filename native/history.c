#include "history.h"

#include <math.h>
#include <string.h>

#define MAGIC "RTKH"
#define VERSION 1u
#define ORDER_MARK 0x01020304u

size_t rtk_history_arena_size(const uint32_t cap[RTK_HIST_TIERS])
{
    size_t total = 0;
    for (int k = 0; k < RTK_HIST_TIERS; k++)
        total += (size_t)cap[k] * sizeof(rtk_hbucket);
    return total;
}

static void clear(rtk_hbucket *b)
{
    b->min = b->mean = b->max = b->score = NAN;
}

int rtk_history_init(rtk_history *h, void *arena, const uint32_t cap[RTK_HIST_TIERS],
                     const int64_t step[RTK_HIST_TIERS])
{
    memset(h, 0, sizeof *h);
    rtk_hbucket *p = arena;
    for (int k = 0; k < RTK_HIST_TIERS; k++) {
        if (cap[k] == 0 || step[k] <= 0 || (k > 0 && step[k] % step[k - 1] != 0))
            return -1;
        h->cap[k] = cap[k];
        h->step[k] = step[k];
        h->tier[k] = p;
        h->last[k] = INT64_MIN;
        for (uint32_t i = 0; i < cap[k]; i++)
            clear(&p[i]);
        p += cap[k];
    }
    return 0;
}

/* Floor division: bucket numbers stay ordered for times before 1970 too. */
static int64_t bucket_of(int64_t t, int64_t step)
{
    int64_t q = t / step;
    return (t % step != 0 && t < 0) ? q - 1 : q;
}

static rtk_hbucket *slot(const rtk_history *h, int k, int64_t bucket)
{
    uint64_t i = (uint64_t)bucket % h->cap[k];
    return &h->tier[k][i];
}

int rtk_history_push(rtk_history *h, int64_t t, float value, float score)
{
    if (h->last[0] != INT64_MIN && bucket_of(t, h->step[0]) < h->last[0])
        return -1;
    if (isnan(value))
        return 0;
    for (int k = 0; k < RTK_HIST_TIERS; k++) {
        int64_t b = bucket_of(t, h->step[k]);
        if (h->last[k] == INT64_MIN || b > h->last[k]) {
            /* Buckets skipped since the newest one hold nothing: mark them missing. */
            int64_t first = h->last[k] == INT64_MIN ? b : h->last[k] + 1;
            if (b - first >= (int64_t)h->cap[k])
                first = b - h->cap[k] + 1;
            for (int64_t g = first; g <= b; g++)
                clear(slot(h, k, g));
            h->last[k] = b;
            h->sum[k] = 0.0;
            h->n[k] = 0;
        }
        rtk_hbucket *s = slot(h, k, b);
        if (h->n[k] == 0) {
            s->min = s->max = value;
            s->score = score;
        } else {
            s->min = value < s->min ? value : s->min;
            s->max = value > s->max ? value : s->max;
            s->score = score > s->score || isnan(s->score) ? score : s->score;
        }
        h->sum[k] += value;
        h->n[k]++;
        s->mean = (float)(h->sum[k] / h->n[k]);
    }
    h->samples++;
    return 0;
}

uint32_t rtk_history_read(const rtk_history *h, int tier, int64_t from, int64_t to, rtk_hbucket *out)
{
    if (tier < 0 || tier >= RTK_HIST_TIERS || to < from)
        return 0;
    uint32_t n = 0;
    int64_t newest = h->last[tier];
    for (int64_t b = from; b <= to; b++, n++) {
        if (newest == INT64_MIN || b > newest || b <= newest - (int64_t)h->cap[tier])
            clear(&out[n]);
        else
            out[n] = *slot(h, tier, b);
    }
    return n;
}

/* Header: magic, version, order mark, caps, steps, last, sum, n, samples. */
#define HEADER_SIZE (4 + 4 + 4 + RTK_HIST_TIERS * (4 + 8 + 8 + 8 + 4) + 8)

size_t rtk_history_serialized_size(const rtk_history *h)
{
    return HEADER_SIZE + rtk_history_arena_size(h->cap);
}

static uint8_t *put(uint8_t *p, const void *v, size_t n)
{
    memcpy(p, v, n);
    return p + n;
}

void rtk_history_serialize(const rtk_history *h, uint8_t *out)
{
    uint32_t version = VERSION, mark = ORDER_MARK;
    uint8_t *p = put(out, MAGIC, 4);
    p = put(p, &version, 4);
    p = put(p, &mark, 4);
    p = put(p, h->cap, sizeof h->cap);
    p = put(p, h->step, sizeof h->step);
    p = put(p, h->last, sizeof h->last);
    p = put(p, h->sum, sizeof h->sum);
    p = put(p, h->n, sizeof h->n);
    p = put(p, &h->samples, 8);
    for (int k = 0; k < RTK_HIST_TIERS; k++)
        p = put(p, h->tier[k], (size_t)h->cap[k] * sizeof(rtk_hbucket));
}

int rtk_history_deserialize(rtk_history *h, const uint8_t *in, size_t len)
{
    uint32_t version, mark, cap[RTK_HIST_TIERS];
    int64_t step[RTK_HIST_TIERS];
    if (len < 12)
        return RTK_HIST_ESHORT;
    if (memcmp(in, MAGIC, 4) != 0)
        return RTK_HIST_EMAGIC;
    memcpy(&version, in + 4, 4);
    memcpy(&mark, in + 8, 4);
    if (mark != ORDER_MARK)
        return RTK_HIST_EORDER;
    if (version != VERSION)
        return RTK_HIST_EVERSION;
    if (len < 12 + sizeof cap + sizeof step)
        return RTK_HIST_ESHORT;
    const uint8_t *p = in + 12;
    memcpy(cap, p, sizeof cap);
    p += sizeof cap;
    memcpy(step, p, sizeof step);
    p += sizeof step;
    if (memcmp(cap, h->cap, sizeof cap) != 0 || memcmp(step, h->step, sizeof step) != 0)
        return RTK_HIST_ESHAPE;
    if (len != rtk_history_serialized_size(h))
        return RTK_HIST_ESHORT;
    memcpy(h->last, p, sizeof h->last);
    p += sizeof h->last;
    memcpy(h->sum, p, sizeof h->sum);
    p += sizeof h->sum;
    memcpy(h->n, p, sizeof h->n);
    p += sizeof h->n;
    memcpy(&h->samples, p, 8);
    p += 8;
    for (int k = 0; k < RTK_HIST_TIERS; k++) {
        memcpy(h->tier[k], p, (size_t)h->cap[k] * sizeof(rtk_hbucket));
        p += (size_t)h->cap[k] * sizeof(rtk_hbucket);
    }
    return 0;
}
