/* Isolation Forest (Liu, Ting and Zhou 2008; what scikit-learn's IsolationForest
 * implements) in fixed memory: training and scoring, no allocation.
 *
 * Each tree is fitted on a subsample of psi = min(sample_size, n_rows) rows drawn
 * without replacement; a node picks a feature at random among those not constant
 * on its rows and a split uniformly in [min, max] of it, down to a height limit
 * L = ceil(log2 psi). A point's path length in a tree is the depth of the leaf it
 * reaches plus c(size of that leaf), the expected depth still needed to isolate
 * it among the leaf's rows; its score is 2^(-mean path length / c(psi)), in (0, 1],
 * higher is more anomalous (scikit-learn's score_samples is the negative).
 *
 * A tree is stored as a complete binary tree of height L, children of node i at
 * 2i + 1 and 2i + 2, so it needs no child pointers and every descent is exactly L
 * steps with no branch to mispredict: 2^L - 1 splits (a double and a uint16
 * feature) and 2^L leaf path lengths (depth + c(size), a double). Below a leaf
 * above the bottom every split is +infinity, sending rows left to its leftmost
 * descendant on the bottom level, which holds its path length. A tree of 256 rows takes 4,608 bytes (child
 * pointers would take 16 bytes a node, 8,176 for the 511 a tree may need); 100 of
 * them and the training scratch (the subsample, a hash set for drawing it, the
 * feature order) take 463,896 bytes with 6 features.
 *
 * Trees, path lengths and the training-score threshold are the same bits on every
 * architecture (integer random numbers; additions, multiplications and divisions
 * in a fixed order); the final 2^x goes through libm's exp2, which may differ in
 * the last bit between C libraries.
 */
#ifndef RTK_IFOREST_H
#define RTK_IFOREST_H

#include <stddef.h>
#include <stdint.h>

#define RTK_IFOREST_MAX_SAMPLE_SIZE (1u << 24)
#define RTK_IFOREST_MAX_FEATURES 65536u

typedef struct {
    uint32_t n_trees, sample_size, n_features;
    uint32_t max_height;   /* ceil(log2(max(sample_size, 2))): sets the slots per tree */
    uint32_t height_limit; /* L of the fitted trees, from psi */
    uint32_t psi;          /* rows each tree was fitted on; 0 until fitted */
    double c_psi;          /* c(psi): scores are path lengths relative to it */
    uint64_t seed;
    /* Tree t: split[t << max_height ...] and feature[...] hold its 2^L - 1 splits,
       leaf[t << max_height ...] its 2^L leaves; rows with x[feature] <= split go left. */
    double *split, *leaf;
    uint16_t *feature;
    uint32_t *rows;     /* training scratch: a tree's subsample, partitioned node by node */
    uint32_t *set;      /* training scratch: open-addressing hash set of drawn rows, */
    uint32_t set_bits;  /* 2^set_bits slots */
    uint32_t *features; /* training scratch: feature order for drawing without replacement */
} rtk_iforest;

#define RTK_IFOREST_ESHAPE     (-1) /* no rows, or not the feature count of the forest */
#define RTK_IFOREST_ENONFINITE (-2) /* a NaN or infinity in the input */
#define RTK_IFOREST_EUNFITTED  (-3) /* scoring before fitting */

/* Bytes of arena for the shape, aligned for double; 0 when the shape is invalid
   (a count of 0, sample_size above RTK_IFOREST_MAX_SAMPLE_SIZE or n_features above
   RTK_IFOREST_MAX_FEATURES) or too big for size_t. */
size_t rtk_iforest_arena_size(uint32_t n_trees, uint32_t sample_size, uint32_t n_features);

/* Returns 0, or RTK_IFOREST_ESHAPE for an invalid shape. The arena must be
   rtk_iforest_arena_size bytes, aligned for double (as malloc returns). */
int rtk_iforest_init(rtk_iforest *f, void *arena, uint32_t n_trees, uint32_t sample_size,
                     uint32_t n_features, uint64_t seed);

/* Fits every tree on X, n_rows x n_features doubles, row-major (n_features must be
   the forest's). Refitting replaces the trees; the same seed and data give the
   same forest. Returns 0 or a negative RTK_IFOREST_E* (the forest is then unfitted). */
int rtk_iforest_fit(rtk_iforest *f, const double *X, uint32_t n_rows, uint32_t n_features);

/* Writes the score of each of X's n_rows rows (n_features each) to out.
   Returns 0 or a negative RTK_IFOREST_E* (then out is untouched). */
int rtk_iforest_score(const rtk_iforest *f, const double *X, uint32_t n_rows, double *out);

/* c(n) = 2 H(n - 1) - 2 (n - 1) / n, the average path length of an unsuccessful
   search in a binary search tree of n keys, with the exact harmonic number H
   (scikit-learn approximates H(i) by ln i + 0.5772); c(0) = c(1) = 0, c(2) = 1. */
double rtk_iforest_c(uint32_t n);

/* The score above which a row is an outlier when a fraction `contamination` in
   (0, 0.5] of the training rows are: the (1 - contamination) quantile of the
   training scores, interpolated linearly like numpy.percentile (how scikit-learn
   sets offset_). Reorders `scores`. Returns 0, or -1 for n = 0 or a contamination
   out of range. */
int rtk_iforest_threshold(double *scores, uint32_t n, double contamination, double *out);

#endif
