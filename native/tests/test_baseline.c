/* Tests of the robust time-of-day baselines, runnable without Python. */
#include <math.h>

#include "baseline.h"
#include "check.h"

static void test_robust_fit_skips_nan_and_falls_back_to_mean_deviation(void)
{
    static double scratch[16];
    const double v[] = {1, 2, NAN, 3, 4, 100};
    rtk_robust r = rtk_robust_fit(v, 6, 1e-3, scratch);
    CHECK(r.n == 5 && r.center == 3 && near(r.scale, 1.4826, 1e-12)); /* MAD 1: the 100 does not count */
    const double zeros[] = {0, 0, 0, 0, 5}; /* mostly 0: MAD 0, mean |x - 0| = 1 */
    r = rtk_robust_fit(zeros, 5, 1e-3, scratch);
    CHECK(r.center == 0 && near(r.scale, 1.2533, 1e-12));
}

/* A clean day of error rate (all 0 %), then one second with 1 of 100 packets dropped (the
   minute's max 1 %): against the metric's floor of 0.5 % that is z 2, not the z of 10^5 a
   scale of 1e-6 gave; a sustained 5 % loss still stands out. */
static void test_a_flat_baseline_takes_the_metric_floor(void)
{
    enum { N = 1440, BINS = 48 };
    static double clean[N], scratch[N], z[2];
    static uint32_t order[N];
    static rtk_robust fit[BINS + 1];
    rtk_robust r = rtk_robust_fit(clean, N, 0.5, scratch);
    CHECK(r.center == 0 && r.scale == 0.5 && r.n == N);
    const double flat[] = {7, 7, 7};
    r = rtk_robust_fit(flat, 3, 0.25, scratch);
    CHECK(r.center == 7 && r.scale == 0.25);
    const double varied[] = {1, 2, 3, 4, 5};
    r = rtk_robust_fit(varied, 5, 0.25, scratch); /* a measured scale above the floor is kept */
    CHECK(near(r.scale, 1.4826, 1e-12));
    rtk_tod_fit(clean, N, 0, 60, BINS, 20, 0.5, scratch, order, fit);
    for (int b = 0; b <= BINS; b++)
        CHECK(fit[b].scale == 0.5);
    const double after[] = {1.0, 5.0};
    rtk_tod_z(after, 2, N, 60, BINS, fit, 1, z);
    CHECK(z[0] == 2.0 && z[1] == 10.0);
}

/* Three days of minutes: 10 at night, 50 from 19:00 to 21:00. */
static void test_time_of_day_bins_expect_the_evening(void)
{
    enum { N = 3 * 1440, BINS = 48 };
    static double v[N], scratch[N], z[4];
    static uint32_t order[N];
    static rtk_robust fit[BINS + 1];
    for (int i = 0; i < N; i++)
        v[i] = (i % 1440 >= 19 * 60 && i % 1440 < 21 * 60 ? 50 : 10) + lcg() / 1000.0;
    v[5] = NAN;
    int64_t first = 1000 * 1440; /* bucket numbers of whole days: minute 0 is 00:00 UTC */
    double days = rtk_tod_fit(v, N, first, 60, BINS, 20, 1e-3, scratch, order, fit);
    CHECK(near(days, 3.0, 1e-9));
    CHECK(near(fit[19 * 2].center, 50, 0.05) && near(fit[3 * 2].center, 10, 0.05));
    CHECK(near(fit[BINS].center, 10, 0.05)); /* overall: the night wins */
    CHECK(fit[19 * 2].n == 90 && fit[0].n == 89); /* 30 minutes x 3 days, one missing */
    const double evening[] = {50.5, 10, NAN, 51};
    int64_t at = first + 3 * 1440 + 19 * 60;
    rtk_tod_z(evening, 4, at, 60, BINS, fit, 1, z);
    CHECK(fabs(z[0]) < 2 && z[1] < -20 && isnan(z[2]) && fabs(z[3]) < 3);
    rtk_tod_z(evening, 4, at, 60, BINS, fit, 0, z);
    CHECK(z[0] > 20); /* against the whole day, the evening is far off */
}

static void test_sparse_bins_take_the_overall_fit(void)
{
    static double v[60], scratch[60];
    static uint32_t order[60];
    static rtk_robust fit[49];
    for (int i = 0; i < 60; i++)
        v[i] = i;
    double days = rtk_tod_fit(v, 60, 0, 60, 48, 40, 1e-3, scratch, order, fit);
    CHECK(near(days, 60.0 / 1440, 1e-12));
    CHECK(fit[0].center == fit[48].center && fit[1].center == fit[48].center);
}

int main(void)
{
    RUN_TEST(test_robust_fit_skips_nan_and_falls_back_to_mean_deviation);
    RUN_TEST(test_a_flat_baseline_takes_the_metric_floor);
    RUN_TEST(test_time_of_day_bins_expect_the_evening);
    RUN_TEST(test_sparse_bins_take_the_overall_fit);
    return TEST_SUMMARY("baselines");
}
