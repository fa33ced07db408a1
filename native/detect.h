/* Streaming anomaly detector: one instance per metric, one call per sample,
 * causal (a score uses the samples up to its own only, never the series'
 * range), fixed memory.
 *
 * Each sample becomes three features that see different kinds of change: the
 * level, the difference from the previous sample (spikes, variance changes) and
 * an exponentially smoothed level (small sustained shifts and drifts). Each
 * feature is scored by its robust z (median/MAD of a sliding window, backed up
 * by the central 95 % spread, so one outlier does not inflate the scale it is
 * judged by and a series on a few values keeps one) and the largest becomes
 * the sample's surprise. Once two days (weeks) are seen, the same features are
 * also computed on the residual from a time-of-day (time-of-week) baseline, the
 * median of past periods' means in the sample's bin, and the view least often
 * surprised in the long run scores: a regular evening peak is then expected,
 * and a missing one is the anomaly. While the values' view scores, a seasonal
 * view past its warm-up bounds its tail: a surprise of the values alone may be
 * the day's rhythm. A coarse scale, the means of `recent`
 * consecutive samples, is judged the same way beside them.
 *
 * The surprise of one sample is not the score: the score is how unusual the
 * recent mean surprise is against its own long-run distribution, as a tail
 * probability p on a log scale (HTM's anomaly likelihood does the same with its
 * prediction errors), L / (L + 8) with L = -log10(p): 0.5 is p = 1e-8. A noisy
 * series whose samples are often surprising needs more to score high than a
 * quiet one, so one threshold fits series of any scale and noise; a surprise
 * that recurred in 3 past episodes is no rarer than their share of the window.
 * An alarm (p < 1e-5) is reported once per episode: the next `quiet` samples
 * score 0. */
#ifndef RTK_DETECT_H
#define RTK_DETECT_H

#include <stddef.h>
#include <stdint.h>

#include "sortwin.h"

#define RTK_DETECT_FEATURES 3 /* level, difference, smoothed level */
#define RTK_DETECT_SEASONS 2  /* time of day, time of week */
#define RTK_DETECT_VIEWS 3    /* the values, and their residuals from the seasonal baselines */
#define RTK_DETECT_COARSE RTK_DETECT_VIEWS /* the coarse scale's stream, after the views' */
#define RTK_DETECT_STREAMS (RTK_DETECT_VIEWS + 1)
#define RTK_DETECT_HORIZONS 2 /* recent means of surprise: short and long */

/* Sum and sum of squares of a sliding window. */
typedef struct {
    double *ring;
    uint32_t cap, n, head;
    double sum, sumsq;
} rtk_wsum;

/* The latest episodes of high surprise: when each ended (sample count) and its peak. */
#define RTK_DETECT_EPISODES 32
typedef struct {
    double peak[RTK_DETECT_EPISODES];
    uint64_t at[RTK_DETECT_EPISODES];
    uint32_t next, open;
    double open_peak;
} rtk_episodes;

/* A seasonal baseline: per bin of the period, a ring of the bin's means in the last `keep`
   periods, and the bin being accumulated now. */
typedef struct {
    float *means;
    uint8_t *count, *next;
    uint32_t bins, keep;
    double period;
    int64_t acc_period;
    uint32_t acc_bin, acc_n;
    double acc_sum;
    double expected, spread; /* the current bin's, from past periods */
} rtk_season;

typedef struct {
    uint32_t window;      /* samples in each robust window */
    uint32_t warmup;      /* samples scored 0 while the windows fill */
    uint32_t bins;        /* time-of-day bins per period */
    uint32_t days;        /* daily means kept per bin, >= 2 */
    double period;        /* seconds (a day) */
    double smooth_alpha;  /* weight of a new sample in the smoothed level */
    uint32_t recent;      /* samples in the recent mean of surprise */
    uint32_t recent_long; /* samples in the slower one (spikes coming denser) */
    uint32_t history;     /* samples in the long-run distribution of that mean */
    uint32_t quiet;       /* samples scored 0 after an alarm (one alarm per episode) */
    uint32_t weeks;       /* weekly means kept per time-of-week bin (7 x bins): 0 (no weekly view) or >= 2 */
} rtk_detect_config;

/* Defaults suited to per-minute series; the agent's 1 Hz series use their own. */
void rtk_detect_default_config(rtk_detect_config *c);

typedef struct {
    rtk_detect_config cfg;
    rtk_sortwin win[RTK_DETECT_STREAMS][RTK_DETECT_FEATURES];
    double prev[RTK_DETECT_STREAMS], smooth[RTK_DETECT_STREAMS];
    uint32_t seen[RTK_DETECT_STREAMS];
    double fit[RTK_DETECT_VIEWS]; /* long-run mean surprise of each view */
    rtk_season season[RTK_DETECT_SEASONS];
    /* per view and horizon: the newest surprises, and the long-run window of their mean */
    rtk_wsum recent[RTK_DETECT_STREAMS][RTK_DETECT_HORIZONS], history[RTK_DETECT_STREAMS][RTK_DETECT_HORIZONS];
    rtk_episodes episodes[RTK_DETECT_STREAMS][RTK_DETECT_HORIZONS];
    double coarse_sum; /* the coarse scale's block being summed */
    uint32_t coarse_n;
    uint64_t samples;
    double first_t, lowest, highest; /* the first sample's time; the range of the values seen so far */
    /* the last sample's workings, for explanations and tests */
    double z[RTK_DETECT_FEATURES];
    double expected;  /* the scoring view's seasonal expectation, NaN for view 0 */
    int view;         /* which view scored it: 0 values, 1 time-of-day residuals, 2 time-of-week */
    double surprise, score;
    double likelihood; /* -log10 of the tail probability, before the quiet time after an alarm */
    int beyond_range;  /* it lay beyond every value seen so far by more than RANGE_MARGIN of their range */
    uint32_t quiet_left;
} rtk_detector;

size_t rtk_detect_arena_size(const rtk_detect_config *c);
/* Returns 0, or -1 for a config out of range. The arena must be 8-byte aligned. */
int rtk_detect_init(rtk_detector *d, void *arena, const rtk_detect_config *c);
/* Scores a sample at time t (seconds). NaN is a gap: NaN back, nothing changes. */
double rtk_detect_update(rtk_detector *d, double t, double x);
/* Persistence: the detector and its arena as one blob, restored by a process of the same build
   into a detector initialised with the same config (and its arena). Load returns 0, or -1 for
   a blob that is not such a state (the detector is then unchanged). */
size_t rtk_detect_state_size(const rtk_detector *d);
void rtk_detect_save(const rtk_detector *d, const void *arena, void *out);
int rtk_detect_load(rtk_detector *d, void *arena, const void *state, size_t len);
/* Scores n samples in order into out (the offline path). */
void rtk_detect_run(rtk_detector *d, const double *t, const double *x, uint32_t n, double *out);

#endif
