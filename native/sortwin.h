/* A sliding window with its order statistics, for robust statistics per sample: the
 * value of any rank, the median, the median absolute deviation (MAD) and the sum of
 * absolute deviations, each in O(log n), and a push (the newest value in, the oldest
 * out) in O(log n). The window is a counted B+tree: leaves are short sorted arrays
 * (a push moves at most one leaf's values, as the sorted array moved the whole
 * window), inner nodes count and bound their children for rank and value searches;
 * a ring in arrival order names the oldest value. Nodes come from pools sized at
 * init: no memory is allocated after it. Memory is the caller's:
 * rtk_sortwin_bytes(capacity). The MAD's search starts where the last one ended: a
 * hint kept in that memory, which the const queries write (no result depends on it; one
 * thread per window). NaN must not be pushed. */
#ifndef RTK_SORTWIN_H
#define RTK_SORTWIN_H

#include <stddef.h>
#include <stdint.h>

#define RTK_SORTWIN_MAX 65535u /* sizes and node numbers are 16 bits */
#define RTK_SORTWIN_LEAF 128   /* values in a leaf, at most */
#define RTK_SORTWIN_FAN 16     /* children of an inner node, at most */

/* A node's sum of values is cached, valid while `summed`. */
typedef struct {
    uint16_t n, summed; /* n: the values held, or for a free node the next free one */
    uint32_t pad;
    double sum;
    double v[RTK_SORTWIN_LEAF]; /* ascending */
} rtk_sortwin_leaf;

typedef struct {
    uint16_t n, summed;
    uint32_t pad;
    double sum;
    uint16_t child[RTK_SORTWIN_FAN];
    uint16_t size[RTK_SORTWIN_FAN]; /* values under each child */
    uint16_t cum[RTK_SORTWIN_FAN];  /* values under children 0..j */
    double max[RTK_SORTWIN_FAN];    /* the largest value under each child */
} rtk_sortwin_inner;

typedef struct {
    unsigned char *mem;           /* the hints, the ring, the leaf pool, the inner pool */
    uint32_t cap, n, head;        /* head: the oldest value's slot once full, else the next free one */
    uint32_t leaves, inners;      /* pool sizes */
    uint16_t root, height;        /* height: inner levels above the leaves (0: the root is a leaf) */
    uint16_t free_leaf, free_inner;
} rtk_sortwin;

size_t rtk_sortwin_bytes(uint32_t capacity);
/* capacity in 1 .. RTK_SORTWIN_MAX; buf holds rtk_sortwin_bytes(capacity), 8-byte aligned. */
void rtk_sortwin_init(rtk_sortwin *w, void *buf, uint32_t capacity);
void rtk_sortwin_clear(rtk_sortwin *w);
/* Adds x, dropping the oldest value once the window is full. */
void rtk_sortwin_push(rtk_sortwin *w, double x);
double rtk_sortwin_rank(const rtk_sortwin *w, uint32_t k); /* the k-th smallest (0-based), k < n */
double rtk_sortwin_median(const rtk_sortwin *w);     /* 0 when empty */
double rtk_sortwin_mad(const rtk_sortwin *w, double median); /* median |x - median|; 0 when empty */
/* The sum of |x - centre|; not const: it refreshes the nodes' cached sums. */
double rtk_sortwin_abs_dev_sum(rtk_sortwin *w, double centre);
/* The value with a share q of the window at or below it (nearest rank, rounding down); 0 when empty. */
double rtk_sortwin_quantile(const rtk_sortwin *w, double q);

#endif
