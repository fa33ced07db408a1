/* What every native test binary shares: checks that count instead of abort, a
 * tolerance compare, deterministic pseudo-random values, and a test runner. */
#ifndef RTK_TEST_CHECK_H
#define RTK_TEST_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int failures, checks, tests_passed, tests_failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__,      \
                    __func__, #cond);                                                 \
        }                                                                             \
    } while (0)

static int near(double a, double b, double tol) { return fabs(a - b) <= tol * (1.0 + fabs(b)); }

/* Deterministic values, the same on every target. */
static uint64_t lcg_state = 12345;
static double lcg(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg_state >> 11) / (double)(1ull << 53) * 2000.0 - 1000.0;
}

#define RUN_TEST(fn)                                   \
    do {                                               \
        int before = failures;                         \
        fn();                                          \
        if (failures == before)                        \
            tests_passed++;                            \
        else                                           \
            tests_failed++;                            \
    } while (0)

/* Ends main(): prints the totals for `suite` and gives the exit status. */
#define TEST_SUMMARY(suite)                                             \
    (printf("%s: %d checks\n%d passed, %d failed\n", suite, checks,     \
            tests_passed, tests_failed),                                \
     tests_failed ? 1 : 0)

#endif
