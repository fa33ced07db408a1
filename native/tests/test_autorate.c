/* Tests of the autorate controller with synthetic delay and load traces, runnable without Python. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "autorate.h"
#include "check.h"

static const double MIN[2] = {1e6, 1e6}, BASE[2] = {10e6, 10e6}, MAX[2] = {20e6, 20e6};

static void start(rtk_autorate *a)
{
    rtk_ar_params p = rtk_ar_defaults();
    CHECK(rtk_ar_init(a, &p, MIN, BASE, MAX, 0.0) == 0);
}

/* Every reflector answers once at `now` with its path RTT plus `extra_ms`. */
static void replies(rtk_autorate *a, int reflectors, double extra_ms, double now)
{
    for (int i = 0; i < reflectors; i++)
        rtk_ar_sample(a, (uint32_t)i, 10.0 + 5.0 * i + extra_ms, now);
}

static void test_bad_arguments_are_refused(void)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    const double low[2] = {20e6, 1e6};
    CHECK(rtk_ar_init(&a, &p, low, BASE, MAX, 0) == -EINVAL); /* min above base */
    const double zero[2] = {0, 1e6};
    CHECK(rtk_ar_init(&a, &p, zero, BASE, MAX, 0) == -EINVAL);
    p.bloat_k = p.window_n + 1;
    CHECK(rtk_ar_init(&a, &p, MIN, BASE, MAX, 0) == -EINVAL);
    p = rtk_ar_defaults();
    p.window_n = RTK_AR_WINDOW + 1;
    CHECK(rtk_ar_init(&a, &p, MIN, BASE, MAX, 0) == -EINVAL);
    p = rtk_ar_defaults();
    p.cut_load_ticks = 0;
    CHECK(rtk_ar_init(&a, &p, MIN, BASE, MAX, 0) == -EINVAL);
    p.cut_load_ticks = RTK_AR_LOAD_TICKS + 1;
    CHECK(rtk_ar_init(&a, &p, MIN, BASE, MAX, 0) == -EINVAL);
    start(&a);
    CHECK(rtk_ar_sample(&a, RTK_AR_REFLECTORS, 10, 0) == -EINVAL);
    CHECK(rtk_ar_sample(&a, 0, -1, 0) == -EINVAL && rtk_ar_sample(&a, 0, NAN, 0) == -EINVAL);
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps == 10e6 && rtk_ar_tick(&a, 2, 0, 0) == RTK_AR_HOLD);
}

/* The baseline follows a shorter path at once and a queue only slowly: 30 s of +40 ms moves
   it by under a third, so the delay stays visible. */
static void test_baseline_tracks_the_unloaded_path(void)
{
    static rtk_autorate a;
    start(&a);
    CHECK(rtk_ar_sample(&a, 0, 20, 0) == 0 && a.reflector[0].baseline_ms == 20);
    rtk_ar_sample(&a, 0, 10, 0.2);
    CHECK(near(a.reflector[0].baseline_ms, 11, 1e-12)); /* gain 0.9 down */
    int delayed = 0;
    for (int i = 0; i < 150; i++) /* 30 s at 5 replies a second */
        delayed += rtk_ar_sample(&a, 0, 50, 0.4 + 0.2 * i) == 1;
    CHECK(delayed == 150);
    CHECK(a.reflector[0].baseline_ms > 11 && a.reflector[0].baseline_ms < 11 + 40.0 / 3);
    CHECK(a.reflector[0].delta_ewma_ms > 25);
}

/* k of the last n: k - 1 delayed samples in the window are jitter, k are bufferbloat; n clean
   samples push them out. */
static void test_bufferbloat_needs_k_of_n(void)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    start(&a);
    double t = 0;
    for (uint32_t i = 0; i < p.window_n; i++, t += 0.05)
        rtk_ar_sample(&a, 0, 10, t);
    for (uint32_t i = 0; i + 1 < p.bloat_k; i++, t += 0.05)
        CHECK(rtk_ar_sample(&a, 0, 10 + p.delay_ms + 1, t) == 1);
    CHECK(rtk_ar_delayed(&a) == p.bloat_k - 1);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 10e6, t) != RTK_AR_CUT);
    CHECK(rtk_ar_sample(&a, 0, 10 + p.delay_ms - 1, t) == 0); /* under the threshold: not delayed */
    rtk_ar_sample(&a, 0, 10 + p.delay_ms + 1, t);
    CHECK(rtk_ar_delayed(&a) == p.bloat_k);
    double before = a.dir[RTK_AR_UPLOAD].rate_bps;
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, before, t) == RTK_AR_CUT);
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps < before);
    for (uint32_t i = 0; i < p.window_n; i++)
        rtk_ar_sample(&a, 0, 10, t + 0.05 * i);
    CHECK(rtk_ar_delayed(&a) == 0);
}

/* The cut grows with the window's mean delta between cut_lo_ms and cut_hi_ms. */
static double cut_at(double extra_ms)
{
    static rtk_autorate a;
    start(&a);
    for (int i = 0; i < 8; i++)
        rtk_ar_sample(&a, 0, 10, 0);
    for (int i = 0; i < 8; i++)
        rtk_ar_sample(&a, 0, 10 + extra_ms, 0.1);
    double before = a.dir[RTK_AR_UPLOAD].rate_bps;
    /* (an achieved rate that does not bound the cut) */
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, before / rtk_ar_defaults().cut_load_factor, 0.2) == RTK_AR_CUT);
    return 1 - a.dir[RTK_AR_UPLOAD].rate_bps / before;
}

static void test_the_cut_scales_with_the_delay(void)
{
    rtk_ar_params p = rtk_ar_defaults();
    double mild = cut_at(p.cut_lo_ms + 1), middle = cut_at((p.cut_lo_ms + p.cut_hi_ms) / 2), worst = cut_at(500);
    /* (the baseline creeps up by 0.1 % of the delta per sample: the mean delta is a little under) */
    CHECK(near(mild, p.cut_min + (p.cut_max - p.cut_min) / (p.cut_hi_ms - p.cut_lo_ms), 2e-3));
    CHECK(near(middle, (p.cut_min + p.cut_max) / 2, 2e-3));
    CHECK(near(worst, p.cut_max, 1e-9));
}

/* The link dropped to 3 Mbit/s under a 10 Mbit/s shaper: the cut goes straight to 0.9 x what
   the direction achieved, not 30 % at a time; an idle direction is not cut. */
static void test_a_cut_never_leaves_more_than_the_achieved_rate(void)
{
    static rtk_autorate a;
    start(&a);
    replies(&a, 1, 0, 0);
    for (int i = 0; i < 8; i++)
        replies(&a, 1, 100, 0.1 * i);
    CHECK(rtk_ar_tick(&a, RTK_AR_DOWNLOAD, 0.2e6, 1.0) == RTK_AR_HOLD); /* acks only: not this one */
    CHECK(a.dir[RTK_AR_DOWNLOAD].rate_bps == 10e6);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 3e6, 1.0) == RTK_AR_CUT);
    CHECK(near(a.dir[RTK_AR_UPLOAD].rate_bps, 2.7e6, 1e-12));
}

/* A 5 Mbit/s link, the shaper a little above it: a sender that stops while the modem's queue
   still stands achieves less in its last tick (here half of it) while the delay shows the
   queue. The cut is bounded by the most achieved in the last cut_load_ticks ticks, the link's
   rate, not by that fading load (with one tick: 0.9 x 2.5 Mbit/s); once idle, nothing is cut. */
static double rate_after_a_stop(uint32_t cut_load_ticks)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    p.cut_load_ticks = cut_load_ticks;
    CHECK(rtk_ar_init(&a, &p, MIN, BASE, MAX, 0) == 0);
    a.dir[RTK_AR_UPLOAD].rate_bps = 5.23e6;
    double t = 0;
    for (int i = 0; i < 10; i++, t += 0.2) { /* 2 s of the transfer, the modem's queue growing */
        for (int r = 0; r < 4; r++)
            replies(&a, 1, 0.4 * i, t + 0.05 * r);
        CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 5e6, t) != RTK_AR_CUT);
    }
    for (int r = 0; r < 4; r++) /* the queue stands: 20 ms */
        replies(&a, 1, 20, t + 0.05 * r);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 2.5e6, t) == RTK_AR_CUT); /* the sender stopped half way */
    double after = a.dir[RTK_AR_UPLOAD].rate_bps;
    for (int i = 1; i <= 3; i++) {
        replies(&a, 1, 20, t + 0.2 * i);
        CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 0.1e6, t + 0.2 * i) == RTK_AR_HOLD); /* idle: no cut */
    }
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps == after);
    return after;
}

static void test_a_sender_that_stops_is_not_cut_to_its_fading_load(void)
{
    double kept = rate_after_a_stop(rtk_ar_defaults().cut_load_ticks);
    CHECK(kept >= 0.9 * 5e6 && kept < 5.23e6);
    CHECK(near(rate_after_a_stop(1), 0.9 * 2.5e6, 1e-9)); /* the bound of this tick alone */
}

/* After a cut: nothing for the refractory period; then, while the delay falls (the modem's
   queue drains), no second cut; a delay that does not fall is cut again. */
static void test_refractory_and_drain(void)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    start(&a);
    replies(&a, 1, 0, 0);
    for (int i = 0; i < 8; i++)
        replies(&a, 1, 60, 0);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 10e6, 0.1) == RTK_AR_CUT);
    double after_cut = a.dir[RTK_AR_UPLOAD].rate_bps;
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, after_cut, 0.1 + p.cut_refractory_s / 2) == RTK_AR_HOLD);
    for (int i = 0; i < 8; i++)
        replies(&a, 1, 40, 0.5);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, after_cut, 0.2 + p.cut_refractory_s) == RTK_AR_HOLD); /* draining */
    for (int i = 0; i < 8; i++)
        replies(&a, 1, 80, 0.9);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, after_cut, 0.3 + p.cut_refractory_s) == RTK_AR_CUT);
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps < after_cut);
}

/* High load without delay: raised by raise_min, then by steps growing to raise_max, one per
   raise_refractory_s, up to max; with a mean delta at raise_delta_ms, held; a cut starts the
   steps at raise_min again. */
static void test_raise_under_load_until_max(void)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    start(&a);
    double t = 0;
    replies(&a, 3, 0, t);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 9.9e6, t) == RTK_AR_RAISE);
    CHECK(near(a.dir[RTK_AR_UPLOAD].rate_bps, 10e6 * (1 + p.raise_min), 1e-12));
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 10e6, t + p.raise_refractory_s / 2) == RTK_AR_HOLD);
    t += p.raise_refractory_s;
    replies(&a, 3, 0, t);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 10e6, t) == RTK_AR_RAISE);
    CHECK(near(a.dir[RTK_AR_UPLOAD].rate_bps, 10e6 * (1 + p.raise_min) * (1 + p.raise_min * p.raise_growth), 1e-12));
    for (int i = 0; i < 200; i++) {
        t += p.raise_refractory_s;
        replies(&a, 3, 0, t);
        rtk_ar_tick(&a, RTK_AR_UPLOAD, a.dir[RTK_AR_UPLOAD].rate_bps, t);
    }
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps == 20e6 && a.dir[RTK_AR_UPLOAD].raise_step == p.raise_max);
    for (int i = 0; i < 8; i++)
        replies(&a, 1, 100, t);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 20e6, t) == RTK_AR_CUT && a.dir[RTK_AR_UPLOAD].raise_step == p.raise_min);
    start(&a);
    for (uint32_t i = 0; i < p.window_n; i++)
        rtk_ar_sample(&a, 0, 10, 0);
    /* below k delayed, but a mean delta of raise_delta_ms */
    rtk_ar_sample(&a, 0, 10 + p.raise_delta_ms * p.window_n * 1.01, 0.1);
    CHECK(rtk_ar_delayed(&a) < p.bloat_k && rtk_ar_mean_delta(&a) >= p.raise_delta_ms);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 10e6, 0.2) == RTK_AR_HOLD);
}

/* Low load: back to base in steps of decay_per_s, from above and from below. */
static void test_idle_decays_to_base(void)
{
    static rtk_autorate a;
    start(&a);
    a.dir[RTK_AR_UPLOAD].rate_bps = 20e6;
    a.dir[RTK_AR_DOWNLOAD].rate_bps = 1e6;
    double t = 0;
    for (int i = 0; i < 600; i++) { /* a minute at 10 ticks a second */
        t += 0.1;
        replies(&a, 2, 0, t);
        rtk_ar_tick(&a, RTK_AR_UPLOAD, 0, t);
        rtk_ar_tick(&a, RTK_AR_DOWNLOAD, 0, t);
        if (i == 99) /* after 10 s: 10 steps of 10 % of the gap */
            CHECK(near(a.dir[RTK_AR_UPLOAD].rate_bps, 10e6 + 10e6 * pow(0.9, 10), 1e-9));
    }
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps == 10e6 && a.dir[RTK_AR_DOWNLOAD].rate_bps == 10e6);
}

/* No reply for stall_s: the minimum; replies again under load: raised from there. */
static void test_lost_probes_mean_the_minimum(void)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    start(&a);
    replies(&a, 3, 0, 1.0);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 0, 1.0 + p.stall_s - 0.1) != RTK_AR_STALL);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 0, 1.0 + p.stall_s) == RTK_AR_STALL);
    CHECK(a.dir[RTK_AR_UPLOAD].rate_bps == 1e6);
    double t = 1.0 + p.stall_s + 1;
    replies(&a, 3, 0, t);
    CHECK(rtk_ar_tick(&a, RTK_AR_UPLOAD, 1e6, t) == RTK_AR_RAISE);
}

static int by_value(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Closed loop: a modem whose rate goes 20 -> 5 -> 15 Mbit/s with a 400 kB buffer, a sender
   that always fills the shaper, four reflectors 10 to 25 ms away answering 20 times a second
   in all (with up to 2 ms of jitter), the controller ticked 5 times a second. From 8 s into
   each rate, the queueing delay's p95 stays under 30 ms and the shaper passes at least 80 %
   of the modem's rate. */
static void test_closed_loop_follows_the_link(void)
{
    static rtk_autorate a;
    rtk_ar_params p = rtk_ar_defaults();
    const double min[2] = {1e6, 1e6}, base[2] = {10e6, 10e6}, max[2] = {30e6, 30e6};
    CHECK(rtk_ar_init(&a, &p, min, base, max, 0) == 0);
    const double phases[3] = {20e6, 5e6, 15e6}, phase_s = 30, settle_s = 8, dt = 0.01;
    static double delays[3000];
    double queue_bits = 0, t = 0;
    for (int ph = 0; ph < 3; ph++) {
        double sent = 0, counted = 0;
        int n = 0;
        for (double s = 0; s < phase_s; s += dt, t += dt) {
            double link = phases[ph], rate = a.dir[RTK_AR_UPLOAD].rate_bps;
            queue_bits += (rate - link) * dt;
            if (queue_bits < 0)
                queue_bits = 0;
            if (queue_bits > 400e3 * 8)
                queue_bits = 400e3 * 8; /* the tail is dropped */
            double queue_ms = queue_bits / link * 1000;
            long step = lround(t / dt);
            if (step % 5 == 0) /* every 0.05 s, the four reflectors take turns */
                rtk_ar_sample(&a, (uint32_t)(step / 5 % 4),
                              10.0 + 5.0 * (step / 5 % 4) + queue_ms + fabs(lcg()) / 500, t);
            if (step % 20 == 0)
                rtk_ar_tick(&a, RTK_AR_UPLOAD, rate < link ? rate : link, t);
            if (s >= settle_s) {
                sent += (rate < link ? rate : link) * dt;
                counted += dt;
                delays[n++] = queue_ms;
            }
        }
        qsort(delays, (size_t)n, sizeof(double), by_value);
        double p95 = delays[(int)(0.95 * (n - 1))];
        printf("  closed loop %.0f Mbit/s: queue p95 %.1f ms, max %.1f ms, %.2f of the link\n", phases[ph] / 1e6,
               p95, delays[n - 1], sent / counted / phases[ph]);
        CHECK(p95 < 30);
        CHECK(sent / counted >= 0.8 * phases[ph]);
    }
}

int main(void)
{
    RUN_TEST(test_bad_arguments_are_refused);
    RUN_TEST(test_baseline_tracks_the_unloaded_path);
    RUN_TEST(test_bufferbloat_needs_k_of_n);
    RUN_TEST(test_the_cut_scales_with_the_delay);
    RUN_TEST(test_a_cut_never_leaves_more_than_the_achieved_rate);
    RUN_TEST(test_a_sender_that_stops_is_not_cut_to_its_fading_load);
    RUN_TEST(test_refractory_and_drain);
    RUN_TEST(test_raise_under_load_until_max);
    RUN_TEST(test_idle_decays_to_base);
    RUN_TEST(test_lost_probes_mean_the_minimum);
    RUN_TEST(test_closed_loop_follows_the_link);
    return TEST_SUMMARY("autorate");
}
