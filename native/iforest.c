#include "iforest.h"

#include <math.h>
#include <string.h>

#define EMPTY UINT32_MAX

/* splitmix64 (Steele, Lea and Flood 2014): integer-only, so one stream on every target. */
static uint64_t next64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n >= 1, without modulo bias (Lemire 2019). */
static uint32_t below(uint64_t *s, uint32_t n)
{
    uint64_t m = (next64(s) >> 32) * n;
    if ((uint32_t)m < n) {
        uint32_t reject = (0u - n) % n;
        while ((uint32_t)m < reject)
            m = (next64(s) >> 32) * n;
    }
    return (uint32_t)(m >> 32);
}

/* Uniform in [0, 1) from 53 random bits. */
static double unit(uint64_t *s)
{
    return (double)(next64(s) >> 11) * 0x1.0p-53;
}

/* The hash set of drawn rows has a power-of-two size of at least 2 sample_size
   slots, so probes stay short. */
static uint32_t set_bits(uint32_t sample_size)
{
    uint32_t bits = 1;
    while ((1u << bits) < 2 * sample_size)
        bits++;
    return bits;
}

/* ceil(log2(max(n, 2))) */
static uint32_t height_for(uint32_t n)
{
    uint32_t h = 1;
    while ((1u << h) < n)
        h++;
    return h;
}

size_t rtk_iforest_arena_size(uint32_t n_trees, uint32_t sample_size, uint32_t n_features)
{
    if (n_trees == 0 || sample_size == 0 || sample_size > RTK_IFOREST_MAX_SAMPLE_SIZE ||
        n_features == 0 || n_features > RTK_IFOREST_MAX_FEATURES)
        return 0;
    /* Per tree 2^max_height slots of split, leaf and feature (one split slot unused). */
    uint64_t tree = ((uint64_t)1 << height_for(sample_size)) * (2 * sizeof(double) + sizeof(uint16_t));
    uint64_t scratch = ((uint64_t)sample_size + (1ull << set_bits(sample_size)) + n_features) *
                       sizeof(uint32_t);
    uint64_t limit = SIZE_MAX;
    if (scratch > limit || tree > (limit - scratch) / n_trees)
        return 0;
    return (size_t)(n_trees * tree + scratch);
}

int rtk_iforest_init(rtk_iforest *f, void *arena, uint32_t n_trees, uint32_t sample_size,
                     uint32_t n_features, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    if (rtk_iforest_arena_size(n_trees, sample_size, n_features) == 0)
        return RTK_IFOREST_ESHAPE;
    f->n_trees = n_trees;
    f->sample_size = sample_size;
    f->n_features = n_features;
    f->max_height = height_for(sample_size);
    f->seed = seed;
    f->set_bits = set_bits(sample_size);
    /* Widest alignment first: doubles, then the uint32 scratch, then uint16. */
    size_t slots = (size_t)n_trees << f->max_height;
    f->split = arena;
    f->leaf = f->split + slots;
    f->rows = (uint32_t *)(f->leaf + slots);
    f->set = f->rows + sample_size;
    f->features = f->set + ((size_t)1 << f->set_bits);
    f->feature = (uint16_t *)(f->features + n_features);
    return 0;
}

double rtk_iforest_c(uint32_t n)
{
    if (n <= 1)
        return 0.0;
    double h = 0.0; /* H(n - 1) */
    for (uint32_t k = 1; k < n; k++)
        h += 1.0 / k;
    return 2.0 * h - 2.0 * (n - 1) / n;
}

static int all_finite(const double *X, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(X[i]))
            return 0;
    return 1;
}

/* Adds v to the set; 0 when it was there already. */
static int insert(uint32_t *set, uint32_t bits, uint32_t v)
{
    uint32_t mask = (1u << bits) - 1;
    uint32_t slot = (uint32_t)(v * 2654435761u) >> (32 - bits); /* Fibonacci hashing */
    while (set[slot] != EMPTY) {
        if (set[slot] == v)
            return 0;
        slot = (slot + 1) & mask;
    }
    set[slot] = v;
    return 1;
}

/* Robert Floyd's sampling: psi distinct rows of n_rows, every subset equally
   likely, in psi draws whatever n_rows is. */
static void draw_rows(rtk_iforest *f, uint32_t n_rows, uint32_t psi, uint64_t *rng)
{
    for (size_t i = 0; i < (size_t)1 << f->set_bits; i++)
        f->set[i] = EMPTY;
    uint32_t k = 0;
    for (uint32_t j = n_rows - psi; j < n_rows; j++) {
        uint32_t r = below(rng, j + 1);
        if (!insert(f->set, f->set_bits, r)) {
            r = j; /* every earlier draw is below j */
            insert(f->set, f->set_bits, r);
        }
        f->rows[k++] = r;
    }
}

typedef struct {
    const double *X;
    uint32_t d, height_limit;
    uint32_t *features;
    uint64_t *rng;
    double *split, *leaf; /* the tree being grown */
    uint16_t *feature;
} builder;

/* Makes node `slot` at `depth` a leaf of path length `path`. Below it every split
   is +infinity, sending rows left to its leftmost descendant on the bottom level;
   the whole subtree is written so the trees depend on the data alone. */
static void make_leaf(builder *b, size_t slot, uint32_t depth, double path)
{
    size_t first = slot, count = 1;
    for (uint32_t k = depth; k < b->height_limit; k++) {
        for (size_t i = first; i < first + count; i++) {
            b->split[i] = INFINITY;
            b->feature[i] = 0;
        }
        first = 2 * first + 1;
        count *= 2;
    }
    size_t bottom = ((size_t)1 << b->height_limit) - 1;
    for (size_t i = first; i < first + count; i++)
        b->leaf[i - bottom] = path;
}

/* Grows the subtree of rows[0..n) at node `slot`, `depth` deep. Recursion is at
   most height_limit + 1 deep (25 at most). */
static void grow(builder *b, uint32_t *rows, uint32_t n, size_t slot, uint32_t depth)
{
    const double *X = b->X;
    const uint32_t d = b->d;
    if (depth < b->height_limit && n > 1) {
        /* Draw features without replacement until one varies on these rows: a
           constant one is swapped out of the candidates, as scikit-learn does. */
        for (uint32_t left = d; left > 0; left--) {
            uint32_t j = below(b->rng, left), feature = b->features[j];
            double lo = X[(size_t)rows[0] * d + feature], hi = lo;
            for (uint32_t i = 1; i < n; i++) {
                double v = X[(size_t)rows[i] * d + feature];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            if (hi > lo) {
                /* Separate statements so no compiler fuses them into an fma (the
                   split must not depend on the target). A split rounded up to hi, or
                   an overflowing span, falls back to lo, like scikit-learn: either
                   way both sides get rows. */
                double span = hi - lo;
                double offset = unit(b->rng) * span;
                double split = lo + offset;
                if (!(split < hi))
                    split = lo;
                /* Branch-free Lomuto partition: rows[0..m) go left, rows[m..i] right
                   (the order within each side does not matter). */
                uint32_t m = 0;
                for (uint32_t i = 0; i < n; i++) {
                    uint32_t r = rows[i];
                    rows[i] = rows[m];
                    rows[m] = r;
                    m += X[(size_t)r * d + feature] <= split;
                }
                b->split[slot] = split;
                b->feature[slot] = (uint16_t)feature;
                grow(b, rows, m, 2 * slot + 1, depth + 1);
                grow(b, rows + m, n - m, 2 * slot + 2, depth + 1);
                return;
            }
            b->features[j] = b->features[left - 1];
            b->features[left - 1] = feature;
        }
    }
    make_leaf(b, slot, depth, (double)depth + rtk_iforest_c(n));
}

int rtk_iforest_fit(rtk_iforest *f, const double *X, uint32_t n_rows, uint32_t n_features)
{
    f->psi = 0;
    if (n_rows == 0 || n_features != f->n_features)
        return RTK_IFOREST_ESHAPE;
    if (!all_finite(X, (size_t)n_rows * n_features))
        return RTK_IFOREST_ENONFINITE;
    uint32_t psi = n_rows < f->sample_size ? n_rows : f->sample_size;
    /* Refitting with the same seed and data gives the same forest. */
    uint64_t rng = f->seed;
    for (uint32_t i = 0; i < n_features; i++)
        f->features[i] = i;
    builder b = {X, n_features, height_for(psi), f->features, &rng, NULL, NULL, NULL};
    for (uint32_t t = 0; t < f->n_trees; t++) {
        draw_rows(f, n_rows, psi, &rng);
        size_t base = (size_t)t << f->max_height;
        b.split = f->split + base;
        b.leaf = f->leaf + base;
        b.feature = f->feature + base;
        grow(&b, f->rows, psi, 0, 0);
    }
    f->psi = psi;
    f->height_limit = b.height_limit;
    f->c_psi = rtk_iforest_c(psi);
    return 0;
}

/* Rows scored together: their sums and nodes, and the tree in use, stay in L1. */
#define BLOCK 256

int rtk_iforest_score(const rtk_iforest *f, const double *X, uint32_t n_rows, double *out)
{
    if (f->psi == 0)
        return RTK_IFOREST_EUNFITTED;
    const uint32_t d = f->n_features, height = f->height_limit;
    if (!all_finite(X, (size_t)n_rows * d))
        return RTK_IFOREST_ENONFINITE;
    const uint32_t bottom = (1u << height) - 1;
    double sum[BLOCK];
    uint32_t node[BLOCK];
    for (uint32_t r0 = 0; r0 < n_rows; r0 += BLOCK) {
        const uint32_t rows = n_rows - r0 < BLOCK ? n_rows - r0 : BLOCK;
        const double *block = X + (size_t)r0 * d;
        memset(sum, 0, sizeof sum);
        for (uint32_t t = 0; t < f->n_trees; t++) {
            const size_t base = (size_t)t << f->max_height;
            const double *split = f->split + base, *leaf = f->leaf + base;
            const uint16_t *feature = f->feature + base;
            /* Level by level over the block rather than row by row: the steps of
               different rows are independent, so the CPU overlaps their chains of
               loads, and a descent has no branch to mispredict. */
            const double *x = block;
            for (uint32_t r = 0; r < rows; r++, x += d)
                node[r] = 1 + (x[feature[0]] > split[0]);
            for (uint32_t level = 1; level < height; level++) {
                x = block;
                for (uint32_t r = 0; r < rows; r++, x += d) {
                    uint32_t i = node[r];
                    node[r] = 2 * i + 1 + (x[feature[i]] > split[i]);
                }
            }
            for (uint32_t r = 0; r < rows; r++)
                sum[r] += leaf[node[r] - bottom];
        }
        /* One training row leaves nothing to compare against: the neutral 0.5,
           as constant data gets. */
        for (uint32_t r = 0; r < rows; r++)
            out[r0 + r] = f->c_psi > 0.0 ? exp2(-(sum[r] / f->n_trees) / f->c_psi) : 0.5;
    }
    return 0;
}

static void sift_down(double *a, size_t i, size_t n)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && a[c + 1] > a[c])
            c++;
        if (!(a[c] > a[i]))
            return;
        double t = a[c];
        a[c] = a[i];
        a[i] = t;
        i = c;
    }
}

int rtk_iforest_threshold(double *scores, uint32_t n, double contamination, double *out)
{
    if (n == 0 || !(contamination > 0.0 && contamination <= 0.5))
        return -1;
    double pos = (1.0 - contamination) * (double)(n - 1);
    uint32_t k = (uint32_t)pos;
    double frac = pos - k;
    /* Partial heapsort: the n - 1 - k largest scores go to the end in order, and
       the largest of the rest, the k-th smallest, stays on top. O(n log n) at worst
       with no recursion and no scratch. */
    for (size_t i = n / 2; i-- > 0;)
        sift_down(scores, i, n);
    for (uint32_t end = n - 1; end > k; end--) {
        double t = scores[0];
        scores[0] = scores[end];
        scores[end] = t;
        sift_down(scores, 0, end);
    }
    double lo = scores[0], hi = k + 1 < n ? scores[k + 1] : lo;
    double step = frac * (hi - lo);
    *out = lo + step;
    return 0;
}
