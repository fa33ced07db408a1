#include "autorate.h"

#include <errno.h>
#include <math.h>
#include <string.h>

rtk_ar_params rtk_ar_defaults(void)
{
    rtk_ar_params p = {
        .delay_ms = 6.0,
        .window_n = 6,
        .bloat_k = 2,
        .cut_min = 0.05,
        .cut_max = 0.30,
        .cut_lo_ms = 6.0,
        .cut_hi_ms = 60.0,
        .cut_load_factor = 0.9,
        .cut_load_ticks = 2,
        .bloat_load = 0.5,
        .cut_refractory_s = 0.6,
        .drain_s = 2.0,
        .high_load = 0.75,
        .raise_min = 0.01,
        .raise_max = 0.05,
        .raise_growth = 1.1,
        .raise_delta_ms = 5.0,
        .raise_refractory_s = 0.2,
        .decay_per_s = 0.1,
        .decay_refractory_s = 1.0,
        .stall_s = 3.0,
        .baseline_down_gain = 0.9,
        .baseline_up_gain = 0.001,
        .delta_gain = 0.1,
    };
    return p;
}

int rtk_ar_init(rtk_autorate *a, const rtk_ar_params *p, const double min_bps[2], const double base_bps[2],
                const double max_bps[2], double now)
{
    if (p->bloat_k < 1 || p->bloat_k > p->window_n || p->window_n > RTK_AR_WINDOW || p->cut_load_ticks < 1 ||
        p->cut_load_ticks > RTK_AR_LOAD_TICKS)
        return -EINVAL;
    for (int d = 0; d < RTK_AR_DIRECTIONS; d++)
        if (!(min_bps[d] > 0 && min_bps[d] <= base_bps[d] && base_bps[d] <= max_bps[d] && isfinite(max_bps[d])))
            return -EINVAL;
    memset(a, 0, sizeof(*a));
    a->p = *p;
    for (uint32_t i = 0; i < RTK_AR_REFLECTORS; i++)
        rtk_ar_reflector_reset(a, i);
    a->last_reply = now;
    for (int d = 0; d < RTK_AR_DIRECTIONS; d++) {
        rtk_ar_direction *dir = &a->dir[d];
        dir->min_bps = min_bps[d];
        dir->base_bps = dir->rate_bps = base_bps[d];
        dir->max_bps = max_bps[d];
        dir->last_change = dir->last_cut = -INFINITY;
        dir->raise_step = p->raise_min;
    }
    return 0;
}

void rtk_ar_reflector_reset(rtk_autorate *a, uint32_t i)
{
    if (i >= RTK_AR_REFLECTORS)
        return;
    rtk_ar_reflector *r = &a->reflector[i];
    r->baseline_ms = r->delta_ewma_ms = 0.0;
    r->last_reply = -1.0;
    r->replies = 0;
}

int rtk_ar_sample(rtk_autorate *a, uint32_t i, double rtt_ms, double now)
{
    if (i >= RTK_AR_REFLECTORS || !(rtt_ms >= 0) || !isfinite(rtt_ms))
        return -EINVAL;
    rtk_ar_reflector *r = &a->reflector[i];
    if (r->replies == 0)
        r->baseline_ms = rtt_ms;
    double delta = rtt_ms - r->baseline_ms;
    r->baseline_ms += (delta < 0 ? a->p.baseline_down_gain : a->p.baseline_up_gain) * delta;
    if (delta < 0)
        delta = 0;
    r->delta_ewma_ms += a->p.delta_gain * (delta - r->delta_ewma_ms);
    r->last_reply = a->last_reply = now;
    r->replies++;
    int delayed = delta > a->p.delay_ms;
    a->delayed[a->head] = (uint8_t)delayed;
    a->delta[a->head] = delta;
    a->head = (a->head + 1) % a->p.window_n;
    if (a->count < a->p.window_n)
        a->count++;
    return delayed;
}

uint32_t rtk_ar_delayed(const rtk_autorate *a)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->count; i++)
        n += a->delayed[i];
    return n;
}

double rtk_ar_mean_delta(const rtk_autorate *a)
{
    double sum = 0;
    for (uint32_t i = 0; i < a->count; i++)
        sum += a->delta[i];
    return a->count ? sum / a->count : 0.0;
}

static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

static rtk_ar_reason set_rate(rtk_ar_direction *dir, double rate, rtk_ar_reason why, double now)
{
    rate = clamp(rate, dir->min_bps, dir->max_bps);
    if (rate == dir->rate_bps)
        return RTK_AR_HOLD;
    dir->rate_bps = rate;
    dir->last_change = now;
    return why;
}

rtk_ar_reason rtk_ar_tick(rtk_autorate *a, uint32_t d, double load_bps, double now)
{
    if (d >= RTK_AR_DIRECTIONS)
        return RTK_AR_HOLD;
    const rtk_ar_params *p = &a->p;
    rtk_ar_direction *dir = &a->dir[d];
    dir->load_bps[dir->load_head] = load_bps;
    dir->load_head = (dir->load_head + 1) % p->cut_load_ticks;
    if (now - a->last_reply >= p->stall_s) {
        /* Nothing answers: the link may be saturated beyond what probes survive, or down.
           The minimum rate is the one that is safe either way. */
        set_rate(dir, dir->min_bps, RTK_AR_STALL, now);
        return dir->rate_bps == dir->min_bps ? RTK_AR_STALL : RTK_AR_HOLD;
    }
    double load = load_bps > 0 ? load_bps / dir->rate_bps : 0;
    double mean = rtk_ar_mean_delta(a);
    if (rtk_ar_delayed(a) >= p->bloat_k) {
        if (load_bps < p->bloat_load * dir->min_bps || now - dir->last_cut < p->cut_refractory_s)
            return RTK_AR_HOLD;
        /* The queue still drains from the last cut: another would only waste capacity. */
        if (now - dir->last_cut < p->drain_s && mean < dir->delta_at_cut)
            return RTK_AR_HOLD;
        double cut = p->cut_min + (p->cut_max - p->cut_min) *
                                      clamp((mean - p->cut_lo_ms) / (p->cut_hi_ms - p->cut_lo_ms), 0, 1);
        double rate = dir->rate_bps * (1 - cut), achieved = 0;
        for (uint32_t i = 0; i < p->cut_load_ticks; i++)
            if (dir->load_bps[i] > achieved)
                achieved = dir->load_bps[i];
        if (achieved > 0 && achieved * p->cut_load_factor < rate)
            rate = achieved * p->cut_load_factor;
        rtk_ar_reason why = set_rate(dir, rate, RTK_AR_CUT, now);
        dir->last_cut = now;
        dir->delta_at_cut = mean;
        dir->raise_step = p->raise_min;
        return why;
    }
    if (now - dir->last_cut < p->cut_refractory_s || now - dir->last_change < p->raise_refractory_s)
        return RTK_AR_HOLD;
    if (load >= p->high_load) {
        if (mean >= p->raise_delta_ms)
            return RTK_AR_HOLD;
        double step = dir->raise_step;
        dir->raise_step = step * p->raise_growth < p->raise_max ? step * p->raise_growth : p->raise_max;
        return set_rate(dir, dir->rate_bps * (1 + step * (1 - mean / p->raise_delta_ms)), RTK_AR_RAISE, now);
    }
    if (now - dir->last_change < p->decay_refractory_s)
        return RTK_AR_HOLD;
    double gap = dir->base_bps - dir->rate_bps;
    double step = fabs(gap) <= 0.01 * dir->base_bps ? 1 : clamp(p->decay_per_s * p->decay_refractory_s, 0, 1);
    return set_rate(dir, dir->rate_bps + gap * step, RTK_AR_DECAY, now);
}
