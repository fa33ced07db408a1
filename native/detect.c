#include "detect.h"

#include <math.h>
#include <string.h>

#include "stats.h"

#define Z_CAP 30.0        /* |z| beyond this is equally certain: caps one sample's weight */
#define MIN_WINDOW 8      /* fewer values than this give no robust scale worth trusting */
#define SCORE_STD_FLOOR 0.05 /* a perfectly calm past still leaves room for noise */
#define SCORE_HALF 8.0 /* -log10 of the tail probability that scores 0.5 */

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
}

static int config_ok(const rtk_detect_config *c)
{
    return c->window >= MIN_WINDOW && c->bins >= 1 && c->days >= 2 && c->days <= 255 && c->period > 0 &&
           c->smooth_alpha > 0 && c->smooth_alpha <= 1 && c->recent >= 1 &&
           c->recent_long >= c->recent && c->history >= 2;
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

size_t rtk_detect_arena_size(const rtk_detect_config *c)
{
    size_t doubles = (size_t)RTK_DETECT_FEATURES * 2 * c->window + c->recent +
                     c->recent_long + RTK_DETECT_HORIZONS * (size_t)c->history;
    doubles *= RTK_DETECT_VIEWS;
    size_t floats = (size_t)c->bins * c->days;
    size_t floats_bytes = (floats * sizeof(float) + 7) & ~(size_t)7;
    return doubles * sizeof(double) + floats_bytes + 2 * (size_t)c->bins;
}

int rtk_detect_init(rtk_detector *d, void *arena, const rtk_detect_config *c)
{
    if (!config_ok(c))
        return -1;
    memset(d, 0, sizeof *d);
    d->cfg = *c;
    double *p = arena;
    for (int v = 0; v < RTK_DETECT_VIEWS; v++)
        for (int f = 0; f < RTK_DETECT_FEATURES; f++, p += 2 * c->window)
            rtk_sortwin_init(&d->win[v][f], p, c->window);
    uint32_t horizon[RTK_DETECT_HORIZONS] = {c->recent, c->recent_long};
    for (int v = 0; v < RTK_DETECT_VIEWS; v++)
        for (int k = 0; k < RTK_DETECT_HORIZONS; k++) {
            wsum_init(&d->recent[v][k], p, horizon[k]);
            wsum_init(&d->history[v][k], p + horizon[k], c->history);
            p += horizon[k] + c->history;
        }
    d->day_means = (float *)p;
    d->day_count = (uint8_t *)d->day_means + (((size_t)c->bins * c->days * sizeof(float) + 7) & ~(size_t)7);
    d->day_next = d->day_count + c->bins;
    memset(d->day_count, 0, 2 * (size_t)c->bins);
    d->acc_day = INT64_MIN;
    d->expected = NAN;
    return 0;
}

/* ---- time-of-day baseline ------------------------------------------------------------------ */

static void fold_bin(rtk_detector *d)
{
    if (d->acc_n == 0)
        return;
    uint32_t b = d->acc_bin, days = d->cfg.days;
    d->day_means[(size_t)b * days + d->day_next[b]] = (float)(d->acc_sum / d->acc_n);
    d->day_next[b] = (uint8_t)((d->day_next[b] + 1) % days);
    if (d->day_count[b] < days)
        d->day_count[b]++;
}

/* The median of the bin's past daily means (NaN until two days are known) and, from
   three days on, their spread (scaled MAD): the noise at this time of day, which the
   rest of the day's samples would understate where noise grows with the level. */
static double expectation(const rtk_detector *d, uint32_t b, double *spread)
{
    uint32_t n = d->day_count[b];
    *spread = 0;
    if (n < 2)
        return NAN;
    float v[255];
    memcpy(v, d->day_means + (size_t)b * d->cfg.days, n * sizeof(float));
    for (uint32_t i = 1; i < n; i++) { /* n <= days: insertion sort is the fast one here */
        float x = v[i];
        uint32_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    double m = n & 1 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + v[n / 2]);
    if (n >= 3) {
        float dev[255];
        for (uint32_t i = 0; i < n; i++)
            dev[i] = (float)fabs(v[i] - m);
        for (uint32_t i = 1; i < n; i++) {
            float x = dev[i];
            uint32_t j = i;
            for (; j > 0 && dev[j - 1] > x; j--)
                dev[j] = dev[j - 1];
            dev[j] = x;
        }
        *spread = RTK_MAD_TO_SIGMA * (n & 1 ? dev[n / 2] : 0.5 * ((double)dev[n / 2 - 1] + dev[n / 2]));
    }
    return m;
}

/* Expected value at t from earlier days only, then t's sample joins today's bin. */
static double baseline_step(rtk_detector *d, double t, double x, double *spread)
{
    double day_f = floor(t / d->cfg.period);
    uint32_t b = (uint32_t)((t - day_f * d->cfg.period) / d->cfg.period * d->cfg.bins);
    if (b >= d->cfg.bins)
        b = d->cfg.bins - 1;
    int64_t day = (int64_t)day_f;
    if (day != d->acc_day || b != d->acc_bin) {
        fold_bin(d);
        d->acc_day = day;
        d->acc_bin = b;
        d->acc_sum = 0;
        d->acc_n = 0;
    }
    double e = expectation(d, b, spread);
    d->acc_sum += x;
    d->acc_n++;
    return e;
}

/* ---- robust features ----------------------------------------------------------------------- */

static double robust_scale(const rtk_sortwin *w, double median)
{
    double s = RTK_MAD_TO_SIGMA * rtk_sortwin_mad(w, median);
    if (s > 0)
        return s;
    /* Over half the window is one value (an idle link's zeros): the mean absolute
       deviation still sees the rest. Rare, so the loop costs nothing in the usual case. */
    double sum = 0;
    for (uint32_t i = 0; i < w->n; i++)
        sum += fabs(w->sorted[i] - median);
    return 1.2533 * sum / w->n;
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

/* How unusual the mean of the newest surprises is against the long-run distribution
   of that mean (-log10 of its tail probability); the mean then joins that distribution. */
static double tail_step(rtk_wsum *recent, rtk_wsum *history, double surprise)
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
    return neglog10_tail(z);
}

/* Over two horizons: a burst of surprise, and a slower rise in how often samples
   surprise (spikes coming denser). The smaller tail probability p, doubled for having
   looked twice, becomes L / (L + SCORE_HALF) with L = -log10(p): 0.5 at p = 1e-8,
   rising without saturating, so a threshold can still rank the extremes. */
static double score_step(rtk_detector *d, int v, double surprise)
{
    double top = 0;
    for (int k = 0; k < RTK_DETECT_HORIZONS; k++) {
        double l = tail_step(&d->recent[v][k], &d->history[v][k], surprise);
        if (l > top)
            top = l;
    }
    double l = top - log10(2.0);
    return l > 0 ? l / (l + SCORE_HALF) : 0.0;
}

double rtk_detect_update(rtk_detector *d, double t, double x)
{
    if (isnan(x))
        return NAN;
    d->samples++;
    double spread;
    double e = baseline_step(d, t, x, &spread);
    double z[RTK_DETECT_VIEWS][RTK_DETECT_FEATURES] = {{0}};
    double surprise[RTK_DETECT_VIEWS] = {0}, score[RTK_DETECT_VIEWS] = {0};
    surprise[0] = view_step(d, 0, x, 0.0, z[0]);
    /* Each view's long-run mean surprise says how well it models the series: the view
       that is less often surprised wins (an expected evening peak surprises only view 0). */
    double keep = 1.0 - 1.0 / d->cfg.history;
    d->fit[0] = d->samples == 1 ? surprise[0] : keep * d->fit[0] + (1 - keep) * surprise[0];
    int view = 0;
    if (!isnan(e)) {
        surprise[1] = view_step(d, 1, x - e, spread, z[1]);
        d->fit[1] = d->seen[1] == 1 ? d->fit[0] : keep * d->fit[1] + (1 - keep) * surprise[1];
        if (d->seen[1] > d->cfg.warmup && d->fit[1] < d->fit[0])
            view = 1;
    }
    /* Each view is judged against its own past surprises: the days before the baseline,
       when every evening peak surprised, say nothing of how surprising its residuals are.
       Surprises of a view's warm-up, judged by half-empty windows, are not kept either:
       they would widen the long-run distribution for as long as they stayed in it. */
    for (int v = 0; v < RTK_DETECT_VIEWS; v++)
        if (d->seen[v] > d->cfg.warmup && (v == 0 || !isnan(e)))
            score[v] = score_step(d, v, surprise[v]);
    d->expected = e;
    d->view = view;
    memcpy(d->z, z[view], sizeof d->z);
    d->surprise = surprise[view];
    d->score = score[view];
    return d->score;
}

void rtk_detect_run(rtk_detector *d, const double *t, const double *x, uint32_t n, double *out)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = rtk_detect_update(d, t[i], x[i]);
}
