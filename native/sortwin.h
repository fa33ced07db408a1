/* A sliding window with its order statistics, for robust statistics per sample: the
 * value of any rank, the median, the median absolute deviation (MAD) and the sum of
 * absolute deviations, each in O(log n), and a push (the newest value in, the oldest
 * out) in O(log n). The window is an AVL tree ordered by value, each node counting
 * and summing its subtree; a value's node is its slot in arrival order, so the
 * oldest is found without a search and no memory is allocated after init.
 * Memory is the caller's: rtk_sortwin_bytes(capacity). NaN must not be pushed. */
#ifndef RTK_SORTWIN_H
#define RTK_SORTWIN_H

#include <stddef.h>
#include <stdint.h>

#define RTK_SORTWIN_MAX 65535u /* node links are 16 bits, one value reserved for "none" */

typedef struct {
    double value;
    double sum;              /* of the values in the subtree rooted here */
    uint16_t child[2];       /* the lower and the higher subtree; RTK_SORTWIN_MAX: none */
    uint16_t size;           /* values in the subtree */
    uint8_t height;
} rtk_sortwin_node;

typedef struct {
    rtk_sortwin_node *node; /* capacity nodes, node i the value pushed into slot i */
    uint32_t cap, n, head;  /* head: the oldest value's slot once full, else the next free one */
    uint16_t root;
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
double rtk_sortwin_abs_dev_sum(const rtk_sortwin *w, double centre); /* the sum of |x - centre| */
/* The value with a share q of the window at or below it (nearest rank, rounding down); 0 when empty. */
double rtk_sortwin_quantile(const rtk_sortwin *w, double q);

#endif
