#include "sortwin.h"

#include <string.h>

#define NONE ((uint16_t)RTK_SORTWIN_MAX)
#define MAX_HEIGHT 32 /* an AVL tree of 65535 nodes is at most 23 high */

size_t rtk_sortwin_bytes(uint32_t capacity)
{
    return (size_t)capacity * sizeof(rtk_sortwin_node);
}

void rtk_sortwin_init(rtk_sortwin *w, void *buf, uint32_t capacity)
{
    w->node = buf;
    w->cap = capacity;
    rtk_sortwin_clear(w);
}

void rtk_sortwin_clear(rtk_sortwin *w)
{
    w->n = w->head = 0;
    w->root = NONE;
}

static inline uint32_t size_of(const rtk_sortwin *w, uint16_t i) { return i == NONE ? 0 : w->node[i].size; }
static inline int height_of(const rtk_sortwin *w, uint16_t i) { return i == NONE ? 0 : w->node[i].height; }
static inline double sum_of(const rtk_sortwin *w, uint16_t i) { return i == NONE ? 0.0 : w->node[i].sum; }

static void refresh(rtk_sortwin *w, uint16_t i)
{
    rtk_sortwin_node *a = &w->node[i];
    int l = height_of(w, a->child[0]), r = height_of(w, a->child[1]);
    a->height = (uint8_t)(1 + (l > r ? l : r));
    a->size = (uint16_t)(1 + size_of(w, a->child[0]) + size_of(w, a->child[1]));
    a->sum = sum_of(w, a->child[0]) + a->value + sum_of(w, a->child[1]);
}

/* Lifts i's child on side `side` (0 lower, 1 higher) above it. */
static uint16_t rotate(rtk_sortwin *w, uint16_t i, int side)
{
    uint16_t c = w->node[i].child[side];
    w->node[i].child[side] = w->node[c].child[!side];
    w->node[c].child[!side] = i;
    refresh(w, i);
    refresh(w, c);
    return c;
}

/* Restores the AVL balance at i (its subtrees balanced, heights differing by 2 at most). */
static uint16_t rebalance(rtk_sortwin *w, uint16_t i)
{
    rtk_sortwin_node *a = &w->node[i];
    int skew = height_of(w, a->child[0]) - height_of(w, a->child[1]);
    if (skew > 1 || skew < -1) {
        int tall = skew > 0 ? 0 : 1; /* the side to lift; first its own inner grandchild, if taller */
        const rtk_sortwin_node *c = &w->node[a->child[tall]];
        if (height_of(w, c->child[tall]) < height_of(w, c->child[!tall]))
            a->child[tall] = rotate(w, a->child[tall], !tall);
        return rotate(w, i, tall);
    }
    refresh(w, i);
    return i;
}

/* The way from the root to a node: the nodes passed and the side taken at each. */
typedef struct {
    uint16_t node[MAX_HEIGHT];
    uint8_t side[MAX_HEIGHT];
    int depth;
} path;

/* The side of b that a belongs on (0 lower, 1 higher) in the tree's order: by value, equal
   values by slot, so every node has one place to find it at. Computed without a branch: on
   noisy data the side is a coin toss the processor would mispredict. */
static inline int side_of(const rtk_sortwin *w, uint16_t a, uint16_t b)
{
    double x = w->node[a].value, y = w->node[b].value;
    return (x > y) | ((x == y) & (a > b));
}

static void step(path *p, uint16_t node, int side)
{
    p->node[p->depth] = node;
    p->side[p->depth++] = (uint8_t)side;
}

/* Walks from the root to node i, or to the empty place it would take. */
static void descend(const rtk_sortwin *w, uint16_t i, path *p)
{
    p->depth = 0;
    for (uint16_t j = w->root; j != NONE && j != i;) {
        int side = side_of(w, i, j);
        step(p, j, side);
        j = w->node[j].child[side];
    }
}

/* Hangs subtree r where the path's k-th step leads. */
static void attach(rtk_sortwin *w, const path *p, int k, uint16_t r)
{
    if (k == 0)
        w->root = r;
    else
        w->node[p->node[k - 1]].child[p->side[k - 1]] = r;
}

/* Rebalances the path's nodes from the deepest up. */
static void rebalance_path(rtk_sortwin *w, const path *p)
{
    for (int k = p->depth - 1; k >= 0; k--)
        attach(w, p, k, rebalance(w, p->node[k]));
}

static void remove_node(rtk_sortwin *w, uint16_t i)
{
    path p;
    descend(w, i, &p);
    const rtk_sortwin_node *a = &w->node[i];
    int at = p.depth;
    if (a->child[0] == NONE || a->child[1] == NONE) {
        attach(w, &p, at, a->child[a->child[0] == NONE]);
    } else {
        /* The next node in order, which has no lower child, leaves its place and takes i's. */
        step(&p, i, 1);
        uint16_t next = a->child[1];
        for (; w->node[next].child[0] != NONE; next = w->node[next].child[0])
            step(&p, next, 0);
        attach(w, &p, p.depth, w->node[next].child[1]);
        w->node[next].child[0] = a->child[0];
        w->node[next].child[1] = a->child[1];
        p.node[at] = next;
        attach(w, &p, at, next);
    }
    rebalance_path(w, &p);
}

void rtk_sortwin_push(rtk_sortwin *w, double x)
{
    uint16_t slot = (uint16_t)w->head;
    if (w->n == w->cap)
        remove_node(w, slot);
    else
        w->n++;
    rtk_sortwin_node *a = &w->node[slot];
    a->value = a->sum = x;
    a->child[0] = a->child[1] = NONE;
    a->size = 1;
    a->height = 1;
    path p;
    descend(w, slot, &p);
    attach(w, &p, p.depth, slot);
    rebalance_path(w, &p);
    w->head = w->head + 1 == w->cap ? 0 : w->head + 1;
}

double rtk_sortwin_rank(const rtk_sortwin *w, uint32_t k)
{
    uint16_t i = w->root;
    for (;;) {
        uint32_t l = size_of(w, w->node[i].child[0]);
        if (k == l)
            return w->node[i].value;
        if (k < l) {
            i = w->node[i].child[0];
        } else {
            k -= l + 1;
            i = w->node[i].child[1];
        }
    }
}

double rtk_sortwin_median(const rtk_sortwin *w)
{
    if (w->n == 0)
        return 0.0;
    uint32_t h = w->n / 2;
    return w->n & 1 ? rtk_sortwin_rank(w, h) : 0.5 * (rtk_sortwin_rank(w, h - 1) + rtk_sortwin_rank(w, h));
}

/* ---- the k-th smallest distance from m ------------------------------------------------------
   The distances |x - m| in ascending order are two sorted runs: m - x for the values under m,
   nearest first, and x - m for the rest. Each run is a virtual subtree of the window's tree,
   split at m along one path: the path's nodes on a run's side form its spine, each with its
   whole subtree on the far side hanging off it. The k-th smallest of the union of two search
   trees takes one step down one of them per comparison: O(height). */

typedef struct {
    uint16_t spine[MAX_HEIGHT];
    uint32_t rest[MAX_HEIGHT + 1]; /* values in the run from spine[i] on (rest[len] = 0) */
    int len;
    int below;                     /* 1: the run under m (nearer: higher), 0: at or over m (nearer: lower) */
} run_spine;

/* A place in a run: a spine node, or a node of a whole subtree hanging off the spine, with
   how many values of the run under it are nearer to m, and its own distance from m. */
typedef struct {
    int spine;     /* index into the run's spine, or -1 for a node of a whole subtree */
    uint16_t node; /* NONE: the run is used up */
    uint32_t nearer;
    double distance;
} cursor;

static inline uint16_t near_child(const rtk_sortwin *w, const run_spine *r, uint16_t i)
{
    return w->node[i].child[r->below];
}

static inline uint16_t far_child(const rtk_sortwin *w, const run_spine *r, uint16_t i)
{
    return w->node[i].child[!r->below];
}

static inline cursor place(const rtk_sortwin *w, const run_spine *r, double m, int spine, uint16_t node)
{
    cursor c = {spine, node, 0, 0.0};
    if (node == NONE)
        return c;
    c.nearer = spine >= 0 ? r->rest[spine + 1] : size_of(w, near_child(w, r, node));
    c.distance = r->below ? m - w->node[node].value : w->node[node].value - m;
    return c;
}

static inline cursor to_near(const rtk_sortwin *w, const run_spine *r, double m, cursor c)
{
    if (c.spine < 0)
        return place(w, r, m, -1, near_child(w, r, c.node));
    return c.spine + 1 < r->len ? place(w, r, m, c.spine + 1, r->spine[c.spine + 1]) : place(w, r, m, -1, NONE);
}

static inline cursor to_far(const rtk_sortwin *w, const run_spine *r, double m, cursor c)
{
    return place(w, r, m, -1, far_child(w, r, c.node));
}

static inline cursor run_root(const rtk_sortwin *w, const run_spine *r, double m)
{
    return r->len ? place(w, r, m, 0, r->spine[0]) : place(w, r, m, -1, NONE);
}

static void split(const rtk_sortwin *w, double m, run_spine *below, run_spine *above)
{
    below->len = above->len = 0;
    below->below = 1;
    above->below = 0;
    for (uint16_t i = w->root; i != NONE;) {
        run_spine *r = w->node[i].value < m ? below : above;
        r->spine[r->len++] = i;
        i = near_child(w, r, i); /* the rest of the run, and of the other, lies that way */
    }
    run_spine *runs[2] = {below, above};
    for (int k = 0; k < 2; k++) {
        run_spine *r = runs[k];
        r->rest[r->len] = 0;
        for (int j = r->len - 1; j >= 0; j--)
            r->rest[j] = r->rest[j + 1] + 1 + size_of(w, far_child(w, r, r->spine[j]));
    }
}

static double kth_distance(const rtk_sortwin *w, const run_spine *ra, const run_spine *rb, double m, uint32_t k)
{
    cursor a = run_root(w, ra, m), b = run_root(w, rb, m);
    /* Ties between the runs count the run under m first: any fixed rule gives the same value. */
    while (a.node != NONE && b.node != NONE) {
        int a_first = a.distance <= b.distance;
        if (a.nearer + b.nearer < k) { /* the earlier of the two and all nearer in its run come before the k-th */
            if (a_first) {
                k -= a.nearer + 1;
                a = to_far(w, ra, m, a);
            } else {
                k -= b.nearer + 1;
                b = to_far(w, rb, m, b);
            }
        } else if (a_first) { /* the later of the two and all farther in its run come after it */
            b = to_near(w, rb, m, b);
        } else {
            a = to_near(w, ra, m, a);
        }
    }
    const run_spine *r = a.node != NONE ? ra : rb;
    cursor c = a.node != NONE ? a : b;
    while (k != c.nearer) {
        if (k < c.nearer) {
            c = to_near(w, r, m, c);
        } else {
            k -= c.nearer + 1;
            c = to_far(w, r, m, c);
        }
    }
    return c.distance;
}

double rtk_sortwin_mad(const rtk_sortwin *w, double median)
{
    if (w->n == 0)
        return 0.0;
    run_spine below, above;
    split(w, median, &below, &above);
    uint32_t h = w->n / 2;
    if (w->n & 1)
        return kth_distance(w, &below, &above, median, h);
    return 0.5 * (kth_distance(w, &below, &above, median, h - 1) + kth_distance(w, &below, &above, median, h));
}

double rtk_sortwin_abs_dev_sum(const rtk_sortwin *w, double centre)
{
    /* The values under centre and the rest summed apart, each against its count: O(log n),
       in another order than one by one (a last-bit difference, for a last-resort scale). */
    double under = 0, over = 0;
    uint32_t count = 0;
    for (uint16_t i = w->root; i != NONE;) {
        const rtk_sortwin_node *a = &w->node[i];
        if (a->value < centre) {
            under += sum_of(w, a->child[0]) + a->value;
            count += size_of(w, a->child[0]) + 1;
            i = a->child[1];
        } else {
            over += a->value + sum_of(w, a->child[1]);
            i = a->child[0];
        }
    }
    return (count * centre - under) + (over - (w->n - count) * centre);
}

double rtk_sortwin_quantile(const rtk_sortwin *w, double q)
{
    if (w->n == 0)
        return 0.0;
    return rtk_sortwin_rank(w, (uint32_t)(q * (w->n - 1)));
}
