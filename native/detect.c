#include "detect.h"

#include <math.h>
#include <string.h>

#include "stats.h"

#define Z_CAP 30.0        /* |z| beyond this is equally certain: caps one sample's weight */
#define MIN_WINDOW 8      /* fewer values than this give no robust scale worth trusting */
#define SCORE_STD_FLOOR 0.05 /* a perfectly calm past still leaves room for noise */
#define SCORE_HALF 8.0 /* -log10 of the tail probability that scores 0.5 */
#define ALARM 5.0 /* -log10 of the tail probability that raises an alarm (HTM's likelihood 1 - 1e-5) */
#define EPISODE_Z 3.0 /* a recent mean this many standard deviations up opens an episode of surprise */
#define RECURRING 2   /* episodes about as high in the long-run window that make a surprise recurring */
#define AS_HIGH 0.9   /* a past episode's peak this share of the surprise is about as high: a daily job's
                         spike varies a little from day to day, and its surprise with it */
#define RANGE_MARGIN 0.05 /* a value this share of the range seen so far beyond it is new ground (HTM's
                            spatial anomaly tolerance in NAB) */
#define TAIL_SHARE 0.025 /* each tail left out of the central spread that backs up the MAD */
#define TAIL_Z 1.959964 /* the normal quantile of 1 - TAIL_SHARE */

void rtk_detect_default_config(rtk_detect_config *c)
{
    c->window = 512;
    c->warmup = 64;
    c->bins = 288;
    c->days = 7;
    c->period = 86400.0;
    c->smooth_alpha = 0.1;
    c->recent = 4;
    c->recent_long = 32;
    c->history = 2048;
    c->quiet = 100;
    c->weeks = 4;
}

static int config_ok(const rtk_detect_config *c)
{
    return c->window >= MIN_WINDOW && c->window <= RTK_SORTWIN_MAX && c->bins >= 1 && c->days >= 2 && c->days <= 255 && c->period > 0 &&
           c->smooth_alpha > 0 && c->smooth_alpha <= 1 && c->recent >= 1 &&
           c->recent_long >= c->recent && c->history >= 2 && c->quiet < UINT32_MAX &&
           (c->weeks == 0 || (c->weeks >= 2 && c->weeks <= 255)) && (uint64_t)c->bins * 7 <= UINT32_MAX;
}

static void wsum_init(rtk_wsum *w, double *ring, uint32_t cap)
{
    memset(w, 0, sizeof *w);
    w->ring = ring;
    w->cap = cap;
}

static void wsum_push(rtk_wsum *w, double x)
{
    if (w->n == w->cap) {
        double old = w->ring[w->head];
        w->sum -= old;
        w->sumsq -= old * old;
    } else {
        w->n++;
    }
    w->ring[w->head] = x;
    w->sum += x;
    w->sumsq += x * x;
    if (++w->head == w->cap) { /* once per lap, re-add exactly: no drift from subtracting */
        w->head = 0;
        w->sum = w->sumsq = 0;
        for (uint32_t i = 0; i < w->n; i++) {
            w->sum += w->ring[i];
            w->sumsq += w->ring[i] * w->ring[i];
        }
    }
}

/* The seasons: time of day over `days` days, and time of week over `weeks` weeks (none at 0). */
static void season_shape(const rtk_detect_config *c, int k, uint32_t *bins, uint32_t *keep, double *period)
{
    *bins = k == 0 ? c->bins : 7 * c->bins;
    *keep = k == 0 ? c->days : c->weeks;
    *period = k == 0 ? c->period : 7 * c->period;
}

static size_t season_bytes(const rtk_detect_config *c, int k)
{
    uint32_t bins, keep;
    double period;
    season_shape(c, k, &bins, &keep, &period);
    if (keep == 0)
        return 0;
    return (((size_t)bins * keep * sizeof(float) + 7) & ~(size_t)7) + ((2 * (size_t)bins + 7) & ~(size_t)7);
}

/* A robust window's ring and nodes, in whole doubles. */
static size_t window_doubles(const rtk_detect_config *c)
{
    return (rtk_sortwin_bytes(c->window) + sizeof(double) - 1) / sizeof(double);
}

size_t rtk_detect_arena_size(const rtk_detect_config *c)
{
    size_t doubles = (size_t)RTK_DETECT_FEATURES * window_doubles(c) + c->recent +
                     c->recent_long + RTK_DETECT_HORIZONS * (size_t)c->history;
    doubles *= RTK_DETECT_STREAMS;
    return doubles * sizeof(double) + season_bytes(c, 0) + season_bytes(c, 1);
}

/* Points the detector's windows into the arena, laid out as rtk_detect_arena_size counts it. */
static void bind(rtk_detector *d, void *arena)
{
    const rtk_detect_config *c = &d->cfg;
    double *p = arena;
    for (int v = 0; v < RTK_DETECT_STREAMS; v++)
        for (int f = 0; f < RTK_DETECT_FEATURES; f++, p += window_doubles(c))
            d->win[v][f].mem = (unsigned char *)p;
    uint32_t horizon[RTK_DETECT_HORIZONS] = {c->recent, c->recent_long};
    for (int v = 0; v < RTK_DETECT_STREAMS; v++)
        for (int k = 0; k < RTK_DETECT_HORIZONS; k++) {
            d->recent[v][k].ring = p;
            d->history[v][k].ring = p + horizon[k];
            p += horizon[k] + c->history;
        }
    unsigned char *b = (unsigned char *)p;
    for (int k = 0; k < RTK_DETECT_SEASONS; k++) {
        rtk_season *sn = &d->season[k];
        season_shape(c, k, &sn->bins, &sn->keep, &sn->period);
        if (sn->keep == 0) {
            sn->means = NULL;
            sn->count = sn->next = NULL;
            continue;
        }
        sn->means = (float *)b;
        sn->count = b + (((size_t)sn->bins * sn->keep * sizeof(float) + 7) & ~(size_t)7);
        sn->next = sn->count + sn->bins;
        b += season_bytes(c, k);
    }
}

int rtk_detect_init(rtk_detector *d, void *arena, const rtk_detect_config *c)
{
    if (!config_ok(c))
        return -1;
    memset(d, 0, sizeof *d);
    memset(arena, 0, rtk_detect_arena_size(c)); /* no stale bytes in a saved state */
    d->cfg = *c;
    double *p = arena;
    for (int v = 0; v < RTK_DETECT_STREAMS; v++)
        for (int f = 0; f < RTK_DETECT_FEATURES; f++, p += window_doubles(c))
            rtk_sortwin_init(&d->win[v][f], p, c->window);
    uint32_t horizon[RTK_DETECT_HORIZONS] = {c->recent, c->recent_long};
    for (int v = 0; v < RTK_DETECT_STREAMS; v++)
        for (int k = 0; k < RTK_DETECT_HORIZONS; k++) {
            wsum_init(&d->recent[v][k], p, horizon[k]);
            wsum_init(&d->history[v][k], p + horizon[k], c->history);
            p += horizon[k] + c->history;
        }
    bind(d, arena); /* the seasons' counts start at 0 with the zeroed arena */
    for (int k = 0; k < RTK_DETECT_SEASONS; k++)
        d->season[k].acc_period = INT64_MIN;
    d->expected = NAN;
    return 0;
}

/* The saved state: a header naming the layout, the detector (its pointers nulled, re-bound
   on load), then its arena: it moves between processes of one build (the agent's restart),
   not between builds with another struct layout. */
typedef struct {
    uint32_t magic, header_size, detector_size, pad;
    uint64_t arena_size;
} state_header;

#define STATE_MAGIC 0x34544452u /* "RDT4": the range seen so far joined the state */

size_t rtk_detect_state_size(const rtk_detector *d)
{
    return sizeof(state_header) + sizeof *d + rtk_detect_arena_size(&d->cfg);
}

void rtk_detect_save(const rtk_detector *d, const void *arena, void *out)
{
    state_header h = {STATE_MAGIC, sizeof h, sizeof *d, 0, rtk_detect_arena_size(&d->cfg)};
    /* Without its pointers, the same learning gives the same bytes in any detector. */
    rtk_detector copy;
    memcpy(&copy, d, sizeof copy);
    for (int v = 0; v < RTK_DETECT_STREAMS; v++) {
        for (int f = 0; f < RTK_DETECT_FEATURES; f++)
            copy.win[v][f].mem = NULL;
        for (int k = 0; k < RTK_DETECT_HORIZONS; k++)
            copy.recent[v][k].ring = copy.history[v][k].ring = NULL;
    }
    for (int k = 0; k < RTK_DETECT_SEASONS; k++) {
        copy.season[k].means = NULL;
        copy.season[k].count = copy.season[k].next = NULL;
    }
    unsigned char *o = out;
    memcpy(o, &h, sizeof h);
    memcpy(o + sizeof h, &copy, sizeof copy);
    memcpy(o + sizeof h + sizeof *d, arena, h.arena_size);
}

static int same_config(const rtk_detect_config *a, const rtk_detect_config *b)
{
    return a->window == b->window && a->warmup == b->warmup && a->bins == b->bins && a->days == b->days &&
           a->period == b->period && a->smooth_alpha == b->smooth_alpha && a->recent == b->recent &&
           a->recent_long == b->recent_long && a->history == b->history && a->quiet == b->quiet &&
           a->weeks == b->weeks;
}

int rtk_detect_load(rtk_detector *d, void *arena, const void *state, size_t len)
{
    state_header h;
    rtk_detector saved;
    const unsigned char *s = state;
    if (len < sizeof h + sizeof saved)
        return -1;
    memcpy(&h, s, sizeof h);
    memcpy(&saved, s + sizeof h, sizeof saved);
    if (h.magic != STATE_MAGIC || h.header_size != sizeof h || h.detector_size != sizeof saved ||
        !same_config(&saved.cfg, &d->cfg) || h.arena_size != rtk_detect_arena_size(&d->cfg) ||
        len != sizeof h + sizeof saved + h.arena_size)
        return -1;
    *d = saved;
    memcpy(arena, s + sizeof h + sizeof saved, h.arena_size);
    bind(d, arena);
    return 0;
}

/* ---- seasonal baselines (time of day, time of week) ---------------------------------------- */

static void fold_bin(rtk_season *sn)
{
    if (sn->acc_n == 0)
        return;
    uint32_t b = sn->acc_bin;
    sn->means[(size_t)b * sn->keep + sn->next[b]] = (float)(sn->acc_sum / sn->acc_n);
    sn->next[b] = (uint8_t)((sn->next[b] + 1) % sn->keep);
    if (sn->count[b] < sn->keep)
        sn->count[b]++;
}

static float median_of_sorted(const float *v, uint32_t n)
{
    return n & 1 ? v[n / 2] : (float)(0.5 * ((double)v[n / 2 - 1] + v[n / 2]));
}

static void sort_floats(float *v, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) { /* n <= 255 and mostly 7: insertion sort is the fast one here */
        float x = v[i];
        uint32_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* The median of the bin's means in past periods (NaN until two are known) and, from three
   on, their spread (scaled MAD): the noise at this time of the day (week), which the rest of
   the period's samples would understate where noise grows with the level. */
static double expectation(const rtk_season *sn, uint32_t b, double *spread)
{
    uint32_t n = sn->count[b];
    *spread = 0;
    if (n < 2)
        return NAN;
    float v[255], dev[255];
    memcpy(v, sn->means + (size_t)b * sn->keep, n * sizeof(float));
    sort_floats(v, n);
    double m = median_of_sorted(v, n);
    if (n >= 3) {
        for (uint32_t i = 0; i < n; i++)
            dev[i] = (float)fabs(v[i] - m);
        sort_floats(dev, n);
        *spread = RTK_MAD_TO_SIGMA * median_of_sorted(dev, n);
    }
    return m;
}

/* Expected value at t from earlier periods only, then t's sample joins this period's bin. */
static double baseline_step(rtk_season *sn, double t, double x, double *spread)
{
    double period_f = floor(t / sn->period);
    uint32_t b = (uint32_t)((t - period_f * sn->period) / sn->period * sn->bins);
    if (b >= sn->bins)
        b = sn->bins - 1;
    int64_t period = (int64_t)period_f;
    if (period != sn->acc_period || b != sn->acc_bin) {
        fold_bin(sn);
        sn->acc_period = period;
        sn->acc_bin = b;
        sn->acc_sum = 0;
        sn->acc_n = 0;
        /* A bin's past means change only when a bin is folded: once per bin entered. */
        sn->expected = expectation(sn, b, &sn->spread);
    }
    double e = sn->expected;
    *spread = sn->spread;
    sn->acc_sum += x;
    sn->acc_n++;
    return e;
}

/* ---- robust features ----------------------------------------------------------------------- */

static double robust_scale(rtk_sortwin *w, double median)
{
    double s = RTK_MAD_TO_SIGMA * rtk_sortwin_mad(w, median);
    /* A series that sits on a few values (quantised counters, an idle link) has a MAD near 0
       that would make its every other value extreme: the central 95 % spread keeps a scale. */
    double central = (rtk_sortwin_quantile(w, 1 - TAIL_SHARE) - rtk_sortwin_quantile(w, TAIL_SHARE)) / (2 * TAIL_Z);
    if (central > s)
        s = central;
    if (s > 0)
        return s;
    /* Over half the window is one value (an idle link's zeros): the mean absolute
       deviation still sees the rest. */
    return 1.2533 * rtk_sortwin_abs_dev_sum(w, median) / w->n;
}

static double capped_z(double dev, double scale)
{
    if (dev == 0)
        return 0.0;
    return scale > 0 && dev / scale < Z_CAP ? dev / scale : Z_CAP;
}

/* Features of y in view v, scored against their windows before joining them. Returns the
   surprise: the largest |z| (its mean over a few samples is near normal, unlike z^2). `floor` is a
   least scale for the level (the time-of-day noise in the residual view). */
static double view_step(rtk_detector *d, int v, double y, double floor, double *z)
{
    rtk_sortwin *w = d->win[v];
    int ready = w[0].n >= MIN_WINDOW, first = d->seen[v] == 0;
    double m[RTK_DETECT_FEATURES] = {0}, s[RTK_DETECT_FEATURES] = {0};
    for (int i = 0; ready && i < RTK_DETECT_FEATURES; i++) {
        m[i] = rtk_sortwin_median(&w[i]);
        s[i] = robust_scale(&w[i], m[i]);
    }
    if (s[0] < floor)
        s[0] = floor;
    /* The smoother sees the sample clipped to 3 scales (a Huber-type EWMA): a lone spike
       then leaves no long trail in it, while a sustained shift still moves it. */
    double clipped = y;
    if (ready && s[0] > 0)
        clipped = y > m[0] + 3 * s[0] ? m[0] + 3 * s[0] : y < m[0] - 3 * s[0] ? m[0] - 3 * s[0] : y;
    double a = d->cfg.smooth_alpha;
    d->smooth[v] = first ? y : d->smooth[v] + a * (clipped - d->smooth[v]);
    double f[RTK_DETECT_FEATURES] = {y, first ? 0.0 : y - d->prev[v], d->smooth[v]};
    d->prev[v] = y;
    d->seen[v]++;
    /* An EWMA of white noise spreads sqrt(a / (2 - a)) as wide as the samples: its least scale. */
    double smooth_floor = s[0] * sqrt(a / (2 - a));
    if (s[2] < smooth_floor)
        s[2] = smooth_floor;
    double top = 0;
    for (int i = 0; i < RTK_DETECT_FEATURES; i++) {
        z[i] = ready ? capped_z(fabs(f[i] - m[i]), s[i]) : 0.0;
        rtk_sortwin_push(&w[i], f[i]);
        if (z[i] > top)
            top = z[i];
    }
    return top;
}

/* ---- score --------------------------------------------------------------------------------- */

/* -log10 of the upper normal tail beyond z, without underflow for large z. */
static double neglog10_tail(double z)
{
    if (z < 30)
        return -log10(0.5 * erfc(z / sqrt(2.0)));
    /* Mills ratio: the tail is phi(z) / z to within 1/z^2. */
    return (0.5 * z * z + log(z * sqrt(2.0 * 3.141592653589793))) / log(10.0);
}

/* Past episodes of surprise that peaked about as high (AS_HIGH of `level` or more) within the long-run window. */
static uint32_t episodes_as_high(const rtk_episodes *e, uint64_t now, uint32_t span, double level)
{
    uint32_t k = 0;
    for (int i = 0; i < RTK_DETECT_EPISODES; i++)
        k += e->at[i] != 0 && e->at[i] + span > now && e->peak[i] >= AS_HIGH * level;
    return k;
}

/* How unusual the mean of the newest surprises is against the long-run distribution
   of that mean (-log10 of its tail probability); the mean then joins that distribution.
   The normal tail is right for a one-off, not for what recurs (a nightly job's spike, a
   load balancer's regular bursts): when at least RECURRING past episodes in the long-run
   window peaked about as high, the probability is at least their share of that window. */
static double tail_step(rtk_wsum *recent, rtk_wsum *history, rtk_episodes *e, uint64_t now, double surprise)
{
    wsum_push(recent, surprise);
    double mean_recent = recent->sum / recent->n, z = 0;
    if (history->n >= 2) {
        double mean = history->sum / history->n;
        double var = history->sumsq / history->n - mean * mean;
        double sd = var > 0 ? sqrt(var) : 0;
        z = (mean_recent - mean) / (sd > SCORE_STD_FLOOR ? sd : SCORE_STD_FLOOR);
    }
    wsum_push(history, mean_recent);
    double l = neglog10_tail(z);
    /* Past episodes can lower l to -log10(RTK_DETECT_EPISODES x horizon / window) at most:
       below that no count changes it, and the scan is skipped (most samples). */
    if (l > -log10((double)RTK_DETECT_EPISODES * recent->cap / history->n)) {
        uint32_t k = episodes_as_high(e, now, history->cap, mean_recent);
        double recurring = -log10((double)k * recent->cap / history->n);
        if (k >= RECURRING && recurring < l)
            l = recurring;
    }
    /* Episodes are recorded by their peak when they end, and only once the long-run window
       is a quarter full: a z against a handful of means says little. */
    if (z >= EPISODE_Z && history->n >= history->cap / 4) {
        if (!e->open || mean_recent > e->open_peak)
            e->open_peak = mean_recent;
        e->open = 1;
    } else if (e->open) {
        e->peak[e->next] = e->open_peak;
        e->at[e->next] = now;
        e->next = (e->next + 1) % RTK_DETECT_EPISODES;
        e->open = 0;
    }
    return l;
}

/* Over two horizons: a burst of surprise, and a slower rise in how often samples
   surprise (spikes coming denser). The smaller tail probability p, doubled for having
   looked twice, becomes L / (L + SCORE_HALF) with L = -log10(p): 0.5 at p = 1e-8,
   rising without saturating, so a threshold can still rank the extremes. */
static double score_step(rtk_detector *d, int v, double surprise)
{
    double top = 0;
    for (int k = 0; k < RTK_DETECT_HORIZONS; k++) {
        double l = tail_step(&d->recent[v][k], &d->history[v][k], &d->episodes[v][k], d->seen[v], surprise);
        if (l > top)
            top = l;
    }
    return top - log10(2.0);
}

double rtk_detect_update(rtk_detector *d, double t, double x)
{
    if (isnan(x))
        return NAN;
    d->samples++;
    /* View 0 judges the values; view 1 + k their residual from season k's expectation, once
       season k has two periods for this bin. */
    double expected[RTK_DETECT_VIEWS], spread[RTK_DETECT_VIEWS] = {0};
    expected[0] = 0;
    for (int k = 0; k < RTK_DETECT_SEASONS; k++)
        expected[1 + k] = d->season[k].keep ? baseline_step(&d->season[k], t, x, &spread[1 + k]) : NAN;
    double z[RTK_DETECT_VIEWS][RTK_DETECT_FEATURES] = {{0}};
    double surprise[RTK_DETECT_VIEWS] = {0};
    /* Each view's long-run mean surprise says how well it models the series: the view
       that is less often surprised wins (an expected evening peak surprises only view 0),
       once its own long-run distribution of surprise holds enough to judge by. */
    double keep = 1.0 - 1.0 / d->cfg.history;
    int view = 0;
    for (int v = 0; v < RTK_DETECT_VIEWS; v++) {
        if (isnan(expected[v]))
            continue;
        surprise[v] = view_step(d, v, x - expected[v], spread[v], z[v]);
        d->fit[v] = d->seen[v] == 1 ? d->fit[0] : keep * d->fit[v] + (1 - keep) * surprise[v];
        if (v > 0 && d->seen[v] > d->cfg.warmup + d->cfg.history / 4 && d->fit[v] < d->fit[view])
            view = v;
    }
    /* Each view is judged against its own past surprises: the days before the baseline,
       when every evening peak surprised, say nothing of how surprising its residuals are.
       Surprises of a view's warm-up, judged by half-empty windows, are not kept either:
       they would widen the long-run distribution for as long as they stayed in it. */
    double l[RTK_DETECT_VIEWS] = {0};
    for (int v = 0; v < RTK_DETECT_VIEWS; v++)
        if (d->seen[v] > d->cfg.warmup && !isnan(expected[v]))
            l[v] = score_step(d, v, surprise[v]);
    /* A surprise of the values alone may be the day's (week's) rhythm: once a seasonal view
       scores its residuals, the values' tail counts only as far as one of them agrees. */
    if (view == 0) {
        int judged = 0;
        double agreed = 0;
        for (int v = 1; v < RTK_DETECT_VIEWS; v++)
            if (d->seen[v] > d->cfg.warmup && !isnan(expected[v])) {
                agreed = judged && agreed > l[v] ? agreed : l[v];
                judged = 1;
            }
        if (judged && agreed < l[0])
            l[0] = agreed;
    }
    /* The coarse scale: the same features and tail on the means of `recent` consecutive
       samples (a change spread over a few samples, each ordinary in its noise, is plain in
       their mean), scored at the sample that completes a block. Two scales looked at: the
       smaller tail probability, doubled. */
    double coarse = 0;
    d->coarse_sum += x;
    if (++d->coarse_n == d->cfg.recent) {
        double zc[RTK_DETECT_FEATURES];
        double s = view_step(d, RTK_DETECT_COARSE, d->coarse_sum / d->coarse_n, 0.0, zc);
        if (d->seen[RTK_DETECT_COARSE] > d->cfg.warmup)
            coarse = score_step(d, RTK_DETECT_COARSE, s);
        d->coarse_sum = 0;
        d->coarse_n = 0;
    }
    double top = (coarse > l[view] ? coarse : l[view]) - log10(2.0);
    /* New ground: a value beyond every value seen so far, by more than a share of their range,
       is an anomaly whatever the windows, which follow a slow drift, or the seasons, which may
       expect a peak, make of it (HTM's spatial anomaly in NAB). Only once the range has seen a
       whole period: a series' first day reaches new highs and lows with its daily rhythm. A
       level shift alarms once: its values are the range's edge from then on. It scores at
       least 0.5 (p = 1e-8): HTM gives it the highest score. */
    if (d->samples == 1) {
        d->first_t = t;
        d->lowest = d->highest = x;
    }
    double margin = RANGE_MARGIN * (d->highest - d->lowest);
    d->beyond_range = d->samples > d->cfg.warmup && t - d->first_t >= d->cfg.period && d->highest > d->lowest &&
                      (x > d->highest + margin || x < d->lowest - margin);
    d->lowest = x < d->lowest ? x : d->lowest;
    d->highest = x > d->highest ? x : d->highest;
    if (d->beyond_range && top < SCORE_HALF)
        top = SCORE_HALF;
    d->expected = view ? expected[view] : NAN;
    d->view = view;
    memcpy(d->z, z[view], sizeof d->z);
    d->surprise = surprise[view];
    d->likelihood = top;
    /* One alarm per episode: once the tail probability crosses the alarm level, the next
       `quiet` samples score 0, so a lasting change (a level shift while the windows learn
       it as the new normal) is reported once, at its start, instead of on every sample. */
    if (d->quiet_left > 0) {
        d->quiet_left--;
        d->score = 0.0;
    } else {
        if (top >= ALARM)
            d->quiet_left = d->cfg.quiet;
        /* L / (L + SCORE_HALF): 0.5 at p = 1e-8, rising without saturating, so a threshold
           can still rank the extremes. */
        d->score = top > 0 ? top / (top + SCORE_HALF) : 0.0;
    }
    return d->score;
}

void rtk_detect_run(rtk_detector *d, const double *t, const double *x, uint32_t n, double *out)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = rtk_detect_update(d, t[i], x[i]);
}
