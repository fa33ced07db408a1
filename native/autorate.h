/* Adaptive shaping (autorate): moves a shaper's rate with a link whose capacity changes,
 * from round-trip samples to several reflectors and the throughput each direction achieves.
 * Fixed memory, no allocation: the caller feeds each reply as it arrives and ticks the
 * controller a few times a second per direction; a tick sets the direction's rate and says why.
 *
 * Per reflector, an RTT baseline (an EWMA that follows a drop at once and a rise slowly, so it
 * tracks the unloaded path) and the EWMA of the delta above it. A sample is delayed when its
 * delta passes delay_ms; bufferbloat is bloat_k delayed of the last window_n samples (all
 * reflectors together: one slow reflector alone is not the link). Bufferbloat cuts each
 * direction that carries traffic (round trips cannot tell which direction queues)
 * multiplicatively, more the worse the window's mean delta, and never above
 * cut_load_factor x the most the direction achieved in its last cut_load_ticks ticks (the
 * link's capacity as it is now; a sender that stops while the queue stands achieves less in
 * its last tick, which is not the link's). High load
 * without delay raises it, by a small step after a cut (a link near its capacity: small
 * overshoots) growing with every raise since (a link that grew: found again fast); low load lets it drift back to the base rate. Refractory
 * periods after each change let its effect show in the samples first; no reply from any
 * reflector for stall_s sets the minimum rate. Rates stay within [min, max]. */
#ifndef RTK_AUTORATE_H
#define RTK_AUTORATE_H

#include <stdint.h>

#define RTK_AR_REFLECTORS 16
#define RTK_AR_WINDOW 64
#define RTK_AR_LOAD_TICKS 8

enum { RTK_AR_DOWNLOAD = 0, RTK_AR_UPLOAD = 1, RTK_AR_DIRECTIONS = 2 };

typedef enum {
    RTK_AR_HOLD = 0, /* nothing to change, or inside a refractory period */
    RTK_AR_CUT,      /* bufferbloat under load */
    RTK_AR_RAISE,    /* high load, no delay */
    RTK_AR_DECAY,    /* low load: towards the base rate */
    RTK_AR_STALL,    /* no reply from any reflector for stall_s: the minimum rate */
} rtk_ar_reason;

typedef struct {
    double delay_ms;            /* a sample's delta above its reflector's baseline that counts as delayed */
    uint32_t window_n, bloat_k; /* bufferbloat: bloat_k delayed of the last window_n samples */
    double cut_min, cut_max;    /* fraction cut at a window mean delta of cut_lo_ms .. cut_hi_ms and above */
    double cut_lo_ms, cut_hi_ms;
    double cut_load_factor;     /* a cut leaves at most this x the achieved rate, */
    uint32_t cut_load_ticks;    /* the highest of the last this many ticks' (1..RTK_AR_LOAD_TICKS) */
    double bloat_load;          /* a direction sending under this x its minimum rate did not fill the queue: not cut */
    double cut_refractory_s;    /* no change for this long after a cut */
    double drain_s;             /* within this long after a cut, cut again only if the delay did not fall */
    double high_load;           /* load fraction above which the rate is raised */
    double raise_min, raise_max; /* fraction raised per raise at zero delay (none at raise_delta_ms): */
    double raise_growth;        /* raise_min after a cut, x raise_growth per raise since, up to raise_max */
    double raise_delta_ms;
    double raise_refractory_s;  /* between raises (and after a decay step) */
    double decay_per_s;         /* fraction of the distance to base covered per second at low load, */
    double decay_refractory_s;  /* in steps this far apart (within 1 % of base: base) */
    double stall_s;             /* no reply from any reflector for this long: minimum rate */
    double baseline_down_gain;  /* EWMA gains per sample: the baseline follows a lower RTT fast, */
    double baseline_up_gain;    /* a higher one slowly (a queue must not become the baseline) */
    double delta_gain;
} rtk_ar_params;

typedef struct {
    double baseline_ms, delta_ewma_ms;
    double last_reply;          /* monotonic seconds; < 0 before the first */
    uint64_t replies;
} rtk_ar_reflector;

typedef struct {
    double min_bps, base_bps, max_bps, rate_bps;
    double last_change, last_cut;
    double delta_at_cut;        /* the window's mean delta at the last cut */
    double raise_step;          /* the next raise's fraction at zero delay */
    double load_bps[RTK_AR_LOAD_TICKS]; /* the achieved rates of the last ticks, a ring */
    uint32_t load_head;
} rtk_ar_direction;

typedef struct {
    rtk_ar_params p;
    rtk_ar_reflector reflector[RTK_AR_REFLECTORS];
    uint8_t delayed[RTK_AR_WINDOW];
    double delta[RTK_AR_WINDOW];
    uint32_t head, count;       /* the window ring */
    double last_reply;          /* any reflector; the start time until the first reply */
    rtk_ar_direction dir[RTK_AR_DIRECTIONS];
} rtk_autorate;

/* The defaults (see the README, "Adaptive shaping", for the measurement behind each). */
rtk_ar_params rtk_ar_defaults(void);

/* Starts with every direction at its base rate. -EINVAL for rates not 0 < min <= base <= max,
   a window outside 1 <= bloat_k <= window_n <= RTK_AR_WINDOW, or cut_load_ticks outside
   1..RTK_AR_LOAD_TICKS. */
int rtk_ar_init(rtk_autorate *a, const rtk_ar_params *p, const double min_bps[2], const double base_bps[2],
                const double max_bps[2], double now);

/* A reflector replaced (rotated out): its baseline starts again. */
void rtk_ar_reflector_reset(rtk_autorate *a, uint32_t i);

/* One reply of reflector i (< RTK_AR_REFLECTORS). Returns 1 when the sample is delayed, 0 when
   not, -EINVAL for a bad index or a negative or non-finite RTT. */
int rtk_ar_sample(rtk_autorate *a, uint32_t i, double rtt_ms, double now);

/* Decides direction d's rate from its achieved rate load_bps since the last tick. */
rtk_ar_reason rtk_ar_tick(rtk_autorate *a, uint32_t d, double load_bps, double now);

/* Delayed samples in the window, and the window's mean delta (0 when empty). */
uint32_t rtk_ar_delayed(const rtk_autorate *a);
double rtk_ar_mean_delta(const rtk_autorate *a);

#endif
