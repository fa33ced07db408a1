/* The Isolation Forest (iforest.c): path-length constants, tree structure,
 * determinism down to the bit on every target, outliers, degenerate inputs. */
#include "iforest.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

static void *make_forest(rtk_iforest *f, uint32_t trees, uint32_t sample, uint32_t d, uint64_t seed)
{
    void *arena = malloc(rtk_iforest_arena_size(trees, sample, d));
    CHECK(arena != NULL);
    CHECK(rtk_iforest_init(f, arena, trees, sample, d, seed) == 0);
    return arena;
}

/* Roughly normal, standard deviation about 1.15: a sum of four uniforms. */
static double gaussish(void)
{
    return (lcg() + lcg() + lcg() + lcg()) / 1000.0;
}

/* Tree t's layout: a split at +infinity sends everything left, and so does every
   split below it (a leaf above the bottom); real splits have a feature in range. */
static void check_layout(const rtk_iforest *f, uint32_t t)
{
    const size_t base = (size_t)t << f->max_height, internal = ((size_t)1 << f->height_limit) - 1;
    for (size_t i = 0; i < internal; i++) {
        double s = f->split[base + i];
        CHECK(isfinite(s) ? f->feature[base + i] < f->n_features : s == INFINITY && f->feature[base + i] == 0);
        if (s == INFINITY && 2 * i + 1 < internal)
            CHECK(f->split[base + 2 * i + 1] == INFINITY && f->split[base + 2 * i + 2] == INFINITY);
    }
}

/* The leaf row x reaches in tree t, and the depth of the node that isolated it. */
static uint32_t descend(const rtk_iforest *f, uint32_t t, const double *x, uint32_t *depth)
{
    const size_t base = (size_t)t << f->max_height;
    uint32_t i = 0;
    *depth = f->height_limit;
    for (uint32_t level = 0; level < f->height_limit; level++) {
        double s = f->split[base + i];
        if (s == INFINITY && *depth == f->height_limit)
            *depth = level;
        i = 2 * i + 1 + (x[f->feature[base + i]] > s);
    }
    return i - ((1u << f->height_limit) - 1);
}

/* For a forest fitted on all of X's rows (n_rows <= sample_size): each leaf's path
   length is its depth plus c(the training rows that reach it). */
static void check_leaves(const rtk_iforest *f, const double *X, uint32_t n_rows)
{
    CHECK(f->psi == n_rows);
    uint32_t leaves = 1u << f->height_limit;
    uint32_t *count = calloc(leaves, sizeof *count), *depth_of = calloc(leaves, sizeof *depth_of);
    for (uint32_t t = 0; t < f->n_trees; t++) {
        check_layout(f, t);
        memset(count, 0, leaves * sizeof *count);
        for (uint32_t r = 0; r < n_rows; r++) {
            uint32_t depth, leaf = descend(f, t, X + (size_t)r * f->n_features, &depth);
            CHECK(count[leaf] == 0 || depth_of[leaf] == depth);
            count[leaf]++;
            depth_of[leaf] = depth;
        }
        for (uint32_t l = 0; l < leaves; l++)
            if (count[l])
                CHECK(f->leaf[((size_t)t << f->max_height) + l] == depth_of[l] + rtk_iforest_c(count[l]));
    }
    free(count);
    free(depth_of);
}

static void test_average_path_length(void)
{
    CHECK(rtk_iforest_c(0) == 0.0 && rtk_iforest_c(1) == 0.0 && rtk_iforest_c(2) == 1.0);
    CHECK(near(rtk_iforest_c(3), 5.0 / 3.0, 1e-15));
    CHECK(near(rtk_iforest_c(4), 2.0 * 11.0 / 6.0 - 1.5, 1e-15));
    /* For large n, H(n) = ln n + gamma + 1/(2n) - 1/(12n^2) + O(n^-4). */
    double n = 256, h = log(n - 1) + 0.5772156649015329 + 1 / (2 * (n - 1)) - 1 / (12 * (n - 1) * (n - 1));
    CHECK(near(rtk_iforest_c(256), 2 * h - 2 * (n - 1) / n, 1e-12));
}

static void test_shapes_and_errors(void)
{
    /* 100 trees of 256 rows and 6 features: the figure iforest.h states. */
    CHECK(rtk_iforest_arena_size(100, 256, 6) == 463896);
    CHECK(rtk_iforest_arena_size(0, 256, 6) == 0 && rtk_iforest_arena_size(100, 0, 6) == 0);
    CHECK(rtk_iforest_arena_size(100, 256, 0) == 0 && rtk_iforest_arena_size(100, 256, 65537) == 0);
    CHECK(rtk_iforest_arena_size(100, RTK_IFOREST_MAX_SAMPLE_SIZE + 1, 6) == 0);
    CHECK(rtk_iforest_arena_size(100, 256, 65536) > 0);
    /* 2^32 - 1 trees of 2^24 rows: more than a 32-bit size_t holds. */
    CHECK(rtk_iforest_arena_size(UINT32_MAX, RTK_IFOREST_MAX_SAMPLE_SIZE, 1) == 0 || sizeof(size_t) == 8);
    rtk_iforest f;
    CHECK(rtk_iforest_init(&f, NULL, 10, 0, 2, 1) == RTK_IFOREST_ESHAPE);
    void *arena = make_forest(&f, 10, 16, 2, 1);
    double X[4] = {1, 2, 3, 4}, out[2] = {-1, -1};
    CHECK(rtk_iforest_score(&f, X, 2, out) == RTK_IFOREST_EUNFITTED && out[0] == -1);
    CHECK(rtk_iforest_fit(&f, X, 0, 2) == RTK_IFOREST_ESHAPE);
    CHECK(rtk_iforest_fit(&f, X, 2, 1) == RTK_IFOREST_ESHAPE);
    X[3] = NAN;
    CHECK(rtk_iforest_fit(&f, X, 2, 2) == RTK_IFOREST_ENONFINITE);
    X[3] = 4;
    CHECK(rtk_iforest_fit(&f, X, 2, 2) == 0);
    X[0] = INFINITY;
    CHECK(rtk_iforest_score(&f, X, 2, out) == RTK_IFOREST_ENONFINITE && out[0] == -1);
    /* A failed refit leaves the forest unfitted rather than half-built. */
    CHECK(rtk_iforest_fit(&f, X, 2, 2) == RTK_IFOREST_ENONFINITE);
    X[0] = 1;
    CHECK(rtk_iforest_score(&f, X, 2, out) == RTK_IFOREST_EUNFITTED);
    free(arena);
}

/* The same seed and data give the same trees and scores, here and on every target
   (the constants were printed on x86-64 and hold under qemu for ARM and MIPS). */
static void test_deterministic(void)
{
    enum { ROWS = 700, D = 3 };
    static double X[ROWS * D], s1[ROWS], s2[ROWS], s3[ROWS];
    lcg_state = 7;
    for (int i = 0; i < ROWS * D; i++)
        X[i] = gaussish();
    rtk_iforest a, b;
    void *arena_a = make_forest(&a, 50, 128, D, 42), *arena_b = make_forest(&b, 50, 128, D, 42);
    CHECK(rtk_iforest_fit(&a, X, ROWS, D) == 0 && rtk_iforest_fit(&b, X, ROWS, D) == 0);
    CHECK(a.psi == 128 && a.height_limit == 7);
    /* A fit writes all 127 splits and 128 leaves of every tree: they compare equal.
       Integers and an in-order sum of the doubles give the same bits whatever the
       byte order. */
    uint64_t mix = 1469598103934665603ull;
    double sum = 0.0;
    uint32_t splits = 0;
    for (uint32_t t = 0; t < a.n_trees; t++) {
        const size_t base = (size_t)t << a.max_height;
        check_layout(&a, t);
        CHECK(memcmp(a.split + base, b.split + base, 127 * sizeof *a.split) == 0);
        CHECK(memcmp(a.feature + base, b.feature + base, 127 * sizeof *a.feature) == 0);
        CHECK(memcmp(a.leaf + base, b.leaf + base, 128 * sizeof *a.leaf) == 0);
        for (size_t i = base; i < base + 127; i++) {
            mix = (mix ^ a.feature[i]) * 1099511628211ull;
            if (isfinite(a.split[i])) {
                sum += a.split[i];
                splits++;
            }
        }
        for (size_t i = base; i < base + 128; i++)
            sum += a.leaf[i];
    }
    CHECK(splits == 2032);
    CHECK(mix == 0xc4e05160e6581b75ull);
    CHECK(sum == 0x1.cb1a817ac7ep+14);
    CHECK(rtk_iforest_score(&a, X, ROWS, s1) == 0 && rtk_iforest_score(&b, X, ROWS, s2) == 0);
    CHECK(memcmp(s1, s2, sizeof s1) == 0);
    /* Refitting gives the same forest again; another seed another one. */
    CHECK(rtk_iforest_fit(&a, X, ROWS, D) == 0 && rtk_iforest_score(&a, X, ROWS, s2) == 0);
    CHECK(memcmp(s1, s2, sizeof s1) == 0);
    rtk_iforest c;
    void *arena_c = make_forest(&c, 50, 128, D, 43);
    CHECK(rtk_iforest_fit(&c, X, ROWS, D) == 0 && rtk_iforest_score(&c, X, ROWS, s3) == 0);
    CHECK(memcmp(s1, s3, sizeof s1) != 0);
    free(arena_a);
    free(arena_b);
    free(arena_c);
}

static void test_outlier_scores_highest(void)
{
    enum { ROWS = 513 };
    static double X[ROWS * 2], s[ROWS];
    lcg_state = 99;
    for (int i = 0; i < (ROWS - 1) * 2; i++)
        X[i] = gaussish();
    X[(ROWS - 1) * 2] = 8.0; /* about 7 standard deviations out on both axes */
    X[(ROWS - 1) * 2 + 1] = -8.0;
    rtk_iforest f;
    void *arena = make_forest(&f, 100, 256, 2, 5);
    CHECK(rtk_iforest_fit(&f, X, ROWS, 2) == 0);
    for (uint32_t t = 0; t < f.n_trees; t++)
        check_layout(&f, t);
    CHECK(rtk_iforest_score(&f, X, ROWS, s) == 0);
    double worst_inlier = 0.0, mean = 0.0;
    for (int i = 0; i < ROWS - 1; i++) {
        CHECK(s[i] > 0.0 && s[i] <= 1.0);
        worst_inlier = s[i] > worst_inlier ? s[i] : worst_inlier;
        mean += s[i] / (ROWS - 1);
    }
    CHECK(s[ROWS - 1] > worst_inlier && s[ROWS - 1] > 0.7);
    CHECK(mean < 0.5);
    free(arena);
}

static void test_constant_data(void)
{
    enum { ROWS = 200 };
    static double X[ROWS * 3], s[ROWS];
    for (int i = 0; i < ROWS; i++) {
        X[i * 3] = 3.0;
        X[i * 3 + 1] = -1.0;
        X[i * 3 + 2] = 7.0;
    }
    rtk_iforest f;
    void *arena = make_forest(&f, 20, 256, 3, 1);
    CHECK(rtk_iforest_fit(&f, X, ROWS, 3) == 0);
    /* Every tree is one leaf of all its rows: its root splits at +infinity. */
    check_leaves(&f, X, ROWS);
    for (uint32_t t = 0; t < f.n_trees; t++)
        CHECK(f.split[(size_t)t << f.max_height] == INFINITY);
    CHECK(rtk_iforest_score(&f, X, ROWS, s) == 0);
    /* Every path is c(psi) long: 0.5, give or take the rounding of the mean. */
    int all_equal = 1;
    for (int i = 0; i < ROWS; i++)
        all_equal &= s[i] == s[0];
    CHECK(all_equal && near(s[0], 0.5, 1e-15));
    const double other[3] = {100, 100, 100};
    CHECK(rtk_iforest_score(&f, other, 1, s + 1) == 0 && s[1] == s[0]);
    free(arena);
}

static void test_fewer_rows_than_sample_size(void)
{
    static double X[10 * 2], s[10];
    lcg_state = 3;
    for (int i = 0; i < 20; i++)
        X[i] = gaussish();
    rtk_iforest f;
    void *arena = make_forest(&f, 30, 256, 2, 8);
    CHECK(rtk_iforest_fit(&f, X, 10, 2) == 0);
    CHECK(f.psi == 10 && f.height_limit == 4 && f.c_psi == rtk_iforest_c(10));
    check_leaves(&f, X, 10);
    CHECK(rtk_iforest_score(&f, X, 10, s) == 0);
    for (int i = 0; i < 10; i++)
        CHECK(s[i] > 0.0 && s[i] <= 1.0);
    /* One row: nothing to isolate it from, every score is the neutral 0.5. */
    CHECK(rtk_iforest_fit(&f, X, 1, 2) == 0);
    CHECK(f.psi == 1 && f.height_limit == 1);
    check_leaves(&f, X, 1);
    CHECK(rtk_iforest_score(&f, X, 10, s) == 0 && s[0] == 0.5 && s[9] == 0.5);
    free(arena);
}

static void test_threshold(void)
{
    double s[100], t = -1;
    for (int i = 0; i < 100; i++)
        s[i] = (i * 37) % 100; /* 0..99 shuffled */
    /* numpy.percentile(0..99, 90) = 89.1, (.., 50) = 49.5 */
    CHECK(rtk_iforest_threshold(s, 100, 0.1, &t) == 0 && near(t, 89.1, 1e-12));
    CHECK(rtk_iforest_threshold(s, 100, 0.5, &t) == 0 && near(t, 49.5, 1e-12));
    CHECK(rtk_iforest_threshold(s, 100, 0.01, &t) == 0 && near(t, 98.01, 1e-12));
    double first = s[0];
    CHECK(rtk_iforest_threshold(s, 1, 0.1, &t) == 0 && t == first);
    for (int i = 0; i < 100; i++)
        s[i] = 0.5;
    CHECK(rtk_iforest_threshold(s, 100, 0.05, &t) == 0 && t == 0.5);
    CHECK(rtk_iforest_threshold(s, 0, 0.1, &t) == -1);
    CHECK(rtk_iforest_threshold(s, 100, 0.0, &t) == -1 && rtk_iforest_threshold(s, 100, 0.6, &t) == -1);
    CHECK(rtk_iforest_threshold(s, 100, NAN, &t) == -1);
}

int main(void)
{
    RUN_TEST(test_average_path_length);
    RUN_TEST(test_shapes_and_errors);
    RUN_TEST(test_deterministic);
    RUN_TEST(test_outlier_scores_highest);
    RUN_TEST(test_constant_data);
    RUN_TEST(test_fewer_rows_than_sample_size);
    RUN_TEST(test_threshold);
    return TEST_SUMMARY("isolation forest");
}
