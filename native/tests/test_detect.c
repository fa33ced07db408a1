/* Tests of the sorted window and the streaming detector, runnable without Python. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detect.h"
#include "sortwin.h"
#include "stats.h"
#include "check.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The k-th smallest |x - c| of the sorted values, the MAD's definition: the middle one (n odd)
   or the mean of the two. */
static double mad_by_sorting(const double *sorted, uint32_t n, double c, double *scratch)
{
    for (uint32_t j = 0; j < n; j++)
        scratch[j] = fabs(sorted[j] - c);
    qsort(scratch, n, sizeof(double), cmp_double);
    uint32_t h = n / 2;
    return n & 1 ? scratch[h] : 0.5 * (scratch[h - 1] + scratch[h]);
}

/* Bit for bit what the sorted array gave: the same middle values, the same differences; the
   MAD about the median and about any centre c, ranks k, the 2.5 % and 97.5 % quantiles. The
   sum of deviations is added in another order: to rounding. */
static void check_against_sorted(rtk_sortwin *w, const double *sorted, uint32_t n, double c, uint32_t k,
                                 double *scratch)
{
    uint32_t h = n / 2;
    double m = rtk_sortwin_median(w);
    CHECK(m == (n & 1 ? sorted[h] : 0.5 * (sorted[h - 1] + sorted[h])));
    CHECK(rtk_sortwin_mad(w, m) == mad_by_sorting(sorted, n, m, scratch));
    CHECK(rtk_sortwin_mad(w, c) == mad_by_sorting(sorted, n, c, scratch));
    CHECK(rtk_sortwin_rank(w, k) == sorted[k]);
    CHECK(rtk_sortwin_quantile(w, 0.025) == sorted[(uint32_t)(0.025 * (n - 1))]);
    CHECK(rtk_sortwin_quantile(w, 0.975) == sorted[(uint32_t)(0.975 * (n - 1))]);
    double sum = 0;
    for (uint32_t j = 0; j < n; j++)
        sum += fabs(sorted[j] - m);
    CHECK(near(rtk_sortwin_abs_dev_sum(w, m), sum, 1e-9 * (1 + sum)));
}

/* Every statistic of the window equals the one computed afresh from its values sorted. */
static void test_sortwin_matches_full_sort(void)
{
    static double buf[1 << 12];
    static double values[3000], scratch[600], sorted[600];
    for (uint32_t cap = 1; cap <= 600; cap += cap < 70 ? 9 : 131) {
        rtk_sortwin w;
        CHECK(rtk_sortwin_bytes(cap) <= sizeof buf);
        rtk_sortwin_init(&w, buf, cap);
        for (int i = 0; i < 3000; i++) {
            /* Coarse values so the window holds ties, which the removal must find exactly. */
            values[i] = i % 5 == 0 ? floor(lcg() / 100) : lcg();
            rtk_sortwin_push(&w, values[i]);
            uint32_t n = i + 1 < (int)cap ? (uint32_t)i + 1 : cap;
            CHECK(w.n == n);
            /* O(log n) levels: every node but the root at least half full */
            CHECK(w.height <= (n < RTK_SORTWIN_LEAF ? 0 : 1 + log(n / (RTK_SORTWIN_LEAF / 2 - 1.0)) / log(RTK_SORTWIN_FAN / 2 - 1.0)));
            memcpy(scratch, values + i + 1 - n, n * sizeof(double));
            double median, mad;
            qsort(scratch, n, sizeof(double), cmp_double);
            memcpy(sorted, scratch, n * sizeof(double));
            rtk_median_mad(scratch, n, &median, &mad); /* leaves the deviations in scratch */
            double m = rtk_sortwin_median(&w);
            CHECK(near(m, median, 1e-12));
            CHECK(near(rtk_sortwin_mad(&w, m), mad, 1e-12));
            double c = values[(uint32_t)i * 7919u % (uint32_t)(i + 1)] + 0.5; /* any centre, not only the median */
            check_against_sorted(&w, sorted, n, c, (uint32_t)(lcg() + 1000) % n, scratch);
        }
    }
}

/* A window of thousands, several levels deep, through level shifts that empty whole leaves
   and fill others (splits, merges, a root that grows and shrinks): checked against a sorted
   copy kept by insertion. */
static void test_sortwin_deep_tree(void)
{
    enum { CAP = 5000, STEPS = 40000 };
    static double buf[1 << 15], ring[CAP], sorted[CAP], scratch[CAP];
    rtk_sortwin w;
    CHECK(rtk_sortwin_bytes(CAP) <= sizeof buf);
    rtk_sortwin_init(&w, buf, CAP);
    uint32_t n = 0, deepest = 0;
    for (int i = 0; i < STEPS; i++) {
        double level = (i / 7000) % 2 ? 5000.0 : 0.0, x = i % 7 == 0 ? floor(lcg() / 50) : lcg() + level;
        if (n == CAP) { /* the sorted copy drops the oldest */
            double old = ring[i % CAP];
            uint32_t j = 0;
            while (sorted[j] < old)
                j++;
            memmove(sorted + j, sorted + j + 1, (n - j - 1) * sizeof(double));
            n--;
        }
        uint32_t j = 0;
        while (j < n && sorted[j] < x)
            j++;
        memmove(sorted + j + 1, sorted + j, (n - j) * sizeof(double));
        sorted[j] = x;
        n++;
        ring[i % CAP] = x;
        rtk_sortwin_push(&w, x);
        CHECK(w.n == n);
        if (w.height > deepest)
            deepest = w.height;
        if (i % 97 != 0)
            continue;
        CHECK(w.height <= (n < RTK_SORTWIN_LEAF ? 0 : 1 + log(n / (RTK_SORTWIN_LEAF / 2 - 1.0)) / log(RTK_SORTWIN_FAN / 2 - 1.0)));
        check_against_sorted(&w, sorted, n, sorted[n / 3] + 0.5, (uint32_t)i * 7919u % n, scratch);
    }
    CHECK(deepest >= 2);
}

static rtk_detector det;
static double arena[1 << 17];

static void init_detector(const rtk_detect_config *c)
{
    CHECK(rtk_detect_arena_size(c) <= sizeof arena);
    CHECK(rtk_detect_init(&det, arena, c) == 0);
}

/* Gaussian noise from two uniform draws (Box-Muller), deterministic. */
static double noise(void)
{
    double u = (lcg() + 1000.0) / 2000.0 + 1e-12, v = (lcg() + 1000.0) / 2000.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void test_detector_spike_and_gap(void)
{
    rtk_detect_config c;
    rtk_detect_default_config(&c);
    init_detector(&c);
    double top_before = 0, at_spike = 0;
    for (int i = 0; i < 3000; i++) {
        double x = i == 2500 ? 100.0 + 15 * 10 : 100.0 + 10 * noise();
        double s = rtk_detect_update(&det, 60.0 * i, x);
        CHECK(s >= 0 && s <= 1);
        if (i < 64)
            CHECK(s == 0); /* warm-up */
        if (i >= 500 && i < 2500 && s > top_before)
            top_before = s;
        if (i == 2500)
            at_spike = s;
    }
    CHECK(at_spike > 0.6); /* p below 1e-12 */
    CHECK(top_before < 0.45); /* 2000 samples of noise stay above p = 1e-7 */
    uint64_t samples = det.samples;
    CHECK(isnan(rtk_detect_update(&det, 60.0 * 3000, NAN)));
    CHECK(det.samples == samples);
}

static void test_detector_is_deterministic(void)
{
    rtk_detect_config c;
    rtk_detect_default_config(&c);
    static double t[4000], x[4000], a[4000], b[4000];
    for (int i = 0; i < 4000; i++) {
        t[i] = 60.0 * i;
        x[i] = 50 + 20 * sin(i / 200.0) + noise();
    }
    init_detector(&c);
    rtk_detect_run(&det, t, x, 4000, a);
    init_detector(&c);
    for (int i = 0; i < 4000; i++)
        b[i] = rtk_detect_update(&det, t[i], x[i]);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

/* A daily evening peak, every day: a recent-window detector is surprised by each one, the
   time-of-day baseline expects it once two days are known. */
static double daily_peak_score(int day, double *expected)
{
    rtk_detect_config c;
    rtk_detect_default_config(&c);
    init_detector(&c);
    double top = 0;
    for (int i = 0; i < (day + 1) * 1440; i++) {
        int minute = i % 1440;
        double x = 10 + noise() + (minute >= 19 * 60 && minute < 21 * 60 ? 40 : 0);
        double s = rtk_detect_update(&det, 60.0 * i, x);
        if (i / 1440 == day && minute >= 19 * 60 && minute < 19 * 60 + 30 && s > top) {
            top = s;
            *expected = det.expected;
        }
    }
    return top;
}

static void test_time_of_day_baseline_expects_daily_peak(void)
{
    double expected = NAN;
    double first = daily_peak_score(0, &expected);
    CHECK(first > 0.85); /* a first evening peak is new: p below 1e-40 */
    CHECK(isnan(expected));
    double later = daily_peak_score(3, &expected);
    CHECK(later < 0.3); /* p > 1e-3: what half an hour of plain noise reaches */
    CHECK(near(expected, 50, 0.1));
    CHECK(det.view == 1);
}

/* New ground: a value beyond the whole range seen so far alarms even when the windows find it
   ordinary, but not in the first day (its rhythm reaches new highs then), and a level shift only
   at its start. */
static void test_detector_new_ground(void)
{
    rtk_detect_config c;
    rtk_detect_default_config(&c);
    init_detector(&c);
    int beyond_first_day = 0, beyond_after_shift = 0, beyond_at = 0;
    for (int i = 0; i < 4000; i++) {
        /* Uniform on [0, 100), but 106 at 3000, 5.5 % of the range beyond it (a surprise under 2.5), and
           at 300 (within 1) from 3500 on. */
        double x = (lcg() + 1000.0) / 20.0;
        x = i == 1000 ? -10.0 : i == 3000 ? 106.0 : i >= 3500 ? 300 + x / 100 : x;
        double s = rtk_detect_update(&det, 60.0 * i, x);
        if (i < 1440)
            beyond_first_day += det.beyond_range;
        if (i == 3000 || i == 3500) {
            beyond_at += det.beyond_range;
            CHECK(s >= 0.5); /* p = 1e-8 at least */
        }
        if (i == 3000)
            CHECK(det.surprise < 2.5);
        if (i > 3500)
            beyond_after_shift += det.beyond_range;
    }
    CHECK(beyond_first_day == 0); /* the -10 at 1000 is beyond, but within the first day */
    CHECK(beyond_at == 2);
    CHECK(beyond_after_shift == 0);
}

/* A detector saved mid-series and restored into another continues exactly as the original. */
static void test_state_restored_mid_series(void)
{
    rtk_detect_config c;
    rtk_detect_default_config(&c);
    static double t[6000], x[6000], whole[6000];
    for (int i = 0; i < 6000; i++) {
        t[i] = 60.0 * i;
        x[i] = 50 + 20 * ((i % 1440) >= 1140 && (i % 1440) < 1260) + noise() + (i == 5000 ? 30 : 0);
    }
    init_detector(&c);
    rtk_detect_run(&det, t, x, 6000, whole);
    init_detector(&c);
    for (int i = 0; i < 3100; i++)
        rtk_detect_update(&det, t[i], x[i]);
    static unsigned char state[1 << 20];
    size_t size = rtk_detect_state_size(&det);
    CHECK(size <= sizeof state);
    rtk_detect_save(&det, arena, state);
    static rtk_detector again;
    static double arena2[1 << 17];
    CHECK(rtk_detect_init(&again, arena2, &c) == 0);
    CHECK(rtk_detect_load(&again, arena2, state, size - 1) == -1);
    CHECK(again.samples == 0);
    CHECK(rtk_detect_load(&again, arena2, state, size) == 0);
    memset(arena, 0xff, rtk_detect_arena_size(&c)); /* nothing of the original is used */
    int same = 1;
    for (int i = 3100; i < 6000; i++)
        same &= rtk_detect_update(&again, t[i], x[i]) == whole[i];
    CHECK(same);
    uint32_t magic, older;
    memcpy(&magic, state, sizeof magic);
    for (char format = '1'; format <= '3'; format++) { /* "RDT1" (sorted arrays), "RDT2" (AVL trees), "RDT3" (no range seen) */
        older = (magic & 0x00ffffffu) | (uint32_t)format << 24;
        memcpy(state, &older, sizeof older);
        CHECK(rtk_detect_load(&again, arena2, state, size) == -1);
    }
    memcpy(state, &magic, sizeof magic);
    CHECK(rtk_detect_load(&again, arena2, state, size) == 0);
    c.quiet++;
    CHECK(rtk_detect_init(&again, arena2, &c) == 0);
    CHECK(rtk_detect_load(&again, arena2, state, size) == -1); /* another config */
}

static void test_detector_config_checked(void)
{
    rtk_detect_config c;
    rtk_detect_default_config(&c);
    c.days = 1;
    CHECK(rtk_detect_init(&det, arena, &c) == -1);
    rtk_detect_default_config(&c);
    c.window = 2;
    CHECK(rtk_detect_init(&det, arena, &c) == -1);
    c.window = RTK_SORTWIN_MAX + 1; /* beyond the trees' 16-bit links */
    CHECK(rtk_detect_init(&det, arena, &c) == -1);
    rtk_detect_default_config(&c);
    c.weeks = 1; /* a weekly median needs two weeks; 0 turns the view off */
    CHECK(rtk_detect_init(&det, arena, &c) == -1);
    c.weeks = 0;
    CHECK(rtk_detect_init(&det, arena, &c) == 0);
}

int main(void)
{
    RUN_TEST(test_sortwin_matches_full_sort);
    RUN_TEST(test_detector_spike_and_gap);
    RUN_TEST(test_detector_is_deterministic);
    RUN_TEST(test_time_of_day_baseline_expects_daily_peak);
    RUN_TEST(test_detector_new_ground);
    RUN_TEST(test_state_restored_mid_series);
    RUN_TEST(test_detector_config_checked);
    RUN_TEST(test_sortwin_deep_tree); /* last: its draws leave the other tests' values as they were */
    return TEST_SUMMARY("detector");
}
