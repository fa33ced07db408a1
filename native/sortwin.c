#include "sortwin.h"

#include <string.h>

#define NONE ((uint16_t)0xffff)
#define LEAF RTK_SORTWIN_LEAF
#define FAN RTK_SORTWIN_FAN
/* Fewest entries in a node other than the root: a split leaves LEAF / 2 (FAN / 2) on each side. */
#define LEAF_MIN (LEAF / 2 - 1)
#define FAN_MIN (FAN / 2 - 1)
#define MAX_HEIGHT 8 /* 65535 values fill at most 1041 leaves: 4 inner levels */

typedef rtk_sortwin_leaf leaf_t;
typedef rtk_sortwin_inner inner_t;

/* Where the last searches ended, for the next to start from: the queries are const, the
   window's memory is not, and no result depends on these. */
typedef struct {
    uint32_t mad_first; /* the first of the nearest values, in the last MAD */
    uint32_t pad;
} hints;

/* A window shorter than a leaf keeps one; in a longer one every leaf holds LEAF_MIN or more. */
static uint32_t leaf_pool(uint32_t capacity) { return capacity < LEAF ? 1 : capacity / LEAF_MIN + 1; }

static uint32_t inner_pool(uint32_t capacity)
{
    uint32_t total = 0;
    for (uint32_t level = leaf_pool(capacity); level > 1; total += level)
        level = level / FAN_MIN + 1;
    return total;
}

size_t rtk_sortwin_bytes(uint32_t capacity)
{
    return sizeof(hints) + (size_t)capacity * sizeof(double) + (size_t)leaf_pool(capacity) * sizeof(leaf_t) +
           (size_t)inner_pool(capacity) * sizeof(inner_t);
}

static inline hints *hint(const rtk_sortwin *w) { return (hints *)w->mem; }
static inline double *ring(const rtk_sortwin *w) { return (double *)(w->mem + sizeof(hints)); }
static inline leaf_t *leaf(const rtk_sortwin *w, uint16_t i)
{
    return (leaf_t *)(w->mem + sizeof(hints) + (size_t)w->cap * sizeof(double)) + i;
}
static inline inner_t *inner(const rtk_sortwin *w, uint16_t i)
{
    return (inner_t *)(w->mem + sizeof(hints) + (size_t)w->cap * sizeof(double) + (size_t)w->leaves * sizeof(leaf_t)) + i;
}

void rtk_sortwin_init(rtk_sortwin *w, void *buf, uint32_t capacity)
{
    w->mem = buf;
    w->cap = capacity;
    w->leaves = leaf_pool(capacity);
    w->inners = inner_pool(capacity);
    rtk_sortwin_clear(w);
}

/* Free nodes are chained through their first field, n, a uint16_t in both kinds; a node
   zeroed is empty and not summed. */
static void *node_at(const rtk_sortwin *w, int is_leaf, uint16_t i)
{
    return is_leaf ? (void *)leaf(w, i) : (void *)inner(w, i);
}

static uint16_t take(rtk_sortwin *w, int is_leaf)
{
    uint16_t *chain = is_leaf ? &w->free_leaf : &w->free_inner, i = *chain;
    uint16_t *node = node_at(w, is_leaf, i);
    *chain = *node;
    memset(node, 0, is_leaf ? sizeof(leaf_t) : sizeof(inner_t));
    return i;
}

static void give(rtk_sortwin *w, int is_leaf, uint16_t i)
{
    uint16_t *chain = is_leaf ? &w->free_leaf : &w->free_inner, *node = node_at(w, is_leaf, i);
    memset(node, 0, is_leaf ? sizeof(leaf_t) : sizeof(inner_t)); /* no stale bytes in a saved state */
    *node = *chain;
    *chain = i;
}

void rtk_sortwin_clear(rtk_sortwin *w)
{
    w->n = w->head = 0;
    w->height = 0;
    w->free_leaf = w->free_inner = NONE;
    for (uint32_t i = w->leaves; i-- > 0;)
        give(w, 1, (uint16_t)i);
    for (uint32_t i = w->inners; i-- > 0;)
        give(w, 0, (uint16_t)i);
    memset(ring(w), 0, (size_t)w->cap * sizeof(double));
    memset(hint(w), 0, sizeof(hints));
    w->root = take(w, 1);
}

/* First index whose value is >= x (lower bound). Branch-free halving: the comparison
   picks the half without a jump the processor could mispredict on noisy data. */
static uint32_t lower_bound(const double *v, uint32_t n, double x)
{
    if (n == 0)
        return 0;
    const double *base = v;
    while (n > 1) {
        uint32_t half = n / 2;
        base = base[half - 1] < x ? base + half : base;
        n -= half;
    }
    return (uint32_t)(base - v) + (*base < x);
}

/* The lower bounds of x in u (n values) and of y in v (m values) together: two searches
   without a jump, interleaved, each step's two loads in flight at once. */
static void lower_bounds(const double *u, uint32_t n, double x, const double *v, uint32_t m, double y,
                         uint32_t *i, uint32_t *j)
{
    const double *bu = u, *bv = v;
    while (n > 1 || m > 1) {
        uint32_t hn = n / 2, hm = m / 2;
        if (hn) {
            bu += (size_t)(bu[hn - 1] < x) * hn;
            n -= hn;
        }
        if (hm) {
            bv += (size_t)(bv[hm - 1] < y) * hm;
            m -= hm;
        }
    }
    *i = (uint32_t)(bu - u) + (n && *bu < x);
    *j = (uint32_t)(bv - v) + (m && *bv < y);
}

/* The child searches scan: a node has a few children, and a series' next values mostly take
   the same one, an exit the processor predicts where a halving search's turns are coin tosses. */

/* The child whose values hold the lower bound of x: the first whose largest is >= x, or the last. */
static inline uint32_t child_by_value(const inner_t *a, double x)
{
    uint32_t c = 0;
    while (c + 1u < a->n && a->max[c] < x)
        c++;
    return c;
}

/* The child holding rank r, r becoming the rank within it (r < the node's count). */
static inline uint32_t child_by_rank(const inner_t *a, uint32_t *r)
{
    uint32_t c = 0;
    while (a->cum[c] <= *r)
        c++;
    if (c)
        *r -= a->cum[c - 1];
    return c;
}

static void refresh_cum(inner_t *a)
{
    uint32_t s = 0;
    for (uint32_t j = 0; j < a->n; j++)
        a->cum[j] = (uint16_t)(s += a->size[j]);
}

/* The way from the root to a leaf: the inner node at each level and the child taken. */
typedef struct {
    uint16_t node[MAX_HEIGHT + 1]; /* node[height]: the leaf */
    uint8_t idx[MAX_HEIGHT];
} path;

static inline uint16_t descend(const rtk_sortwin *w, double x, path *p)
{
    uint16_t i = w->root;
    for (int d = 0; d < w->height; d++) {
        const inner_t *a = inner(w, i);
        uint32_t c = child_by_value(a, x);
        p->node[d] = i;
        p->idx[d] = (uint8_t)c;
        i = a->child[c];
    }
    p->node[w->height] = i;
    return i;
}

/* The size and largest value of the node at level d (the height: a leaf). */
static uint16_t size_at(const rtk_sortwin *w, int d, uint16_t i)
{
    if (d == w->height)
        return leaf(w, i)->n;
    const inner_t *a = inner(w, i);
    return a->cum[a->n - 1];
}

static double max_at(const rtk_sortwin *w, int d, uint16_t i)
{
    if (d == w->height)
        return leaf(w, i)->v[leaf(w, i)->n - 1];
    const inner_t *a = inner(w, i);
    return a->max[a->n - 1];
}

/* Adds delta to the count of child c of a, and to the counts of children c on. */
static inline void count_from(inner_t *a, uint32_t c, int delta)
{
    a->size[c] = (uint16_t)(a->size[c] + delta);
    for (uint32_t j = c; j < a->n; j++)
        a->cum[j] = (uint16_t)(a->cum[j] + delta);
}

/* The leaf at the end of p changed: its ancestors' bounds follow, their sums are out of date. */
static void bound_path(const rtk_sortwin *w, const path *p)
{
    for (int d = w->height - 1; d >= 0; d--) {
        inner_t *a = inner(w, p->node[d]);
        if (size_at(w, d + 1, p->node[d + 1]))
            a->max[p->idx[d]] = max_at(w, d + 1, p->node[d + 1]);
        a->summed = 0;
    }
}

/* The leaf at the end of p changed, its largest value too if `largest`. */
static inline void touch_path(const rtk_sortwin *w, const path *p, int largest)
{
    if (largest) {
        bound_path(w, p);
        return;
    }
    for (int d = 0; d < w->height; d++)
        inner(w, p->node[d])->summed = 0;
}

/* The leaf at the end of p gained (+1) or lost (-1) a value. */
static void resize_path(const rtk_sortwin *w, const path *p, int delta)
{
    for (int d = 0; d < w->height; d++)
        count_from(inner(w, p->node[d]), p->idx[d], delta);
    bound_path(w, p);
}

/* Sets parent entry c from its child, at level d + 1. */
static void entry_from_child(const rtk_sortwin *w, inner_t *a, uint32_t c, int d)
{
    a->size[c] = size_at(w, d + 1, a->child[c]);
    a->max[c] = max_at(w, d + 1, a->child[c]);
}

static void entry_insert(inner_t *a, uint32_t at, uint16_t child)
{
    uint32_t tail = a->n - at;
    memmove(a->child + at + 1, a->child + at, tail * sizeof a->child[0]);
    memmove(a->size + at + 1, a->size + at, tail * sizeof a->size[0]);
    memmove(a->max + at + 1, a->max + at, tail * sizeof a->max[0]);
    a->child[at] = child;
    a->n++;
}

/* Moves entries [from, from + count) of a to the end of b (both inner). */
static void entries_move(inner_t *a, uint32_t from, uint32_t count, inner_t *b, uint32_t at)
{
    memmove(b->child + at + count, b->child + at, (b->n - at) * sizeof b->child[0]);
    memmove(b->size + at + count, b->size + at, (b->n - at) * sizeof b->size[0]);
    memmove(b->max + at + count, b->max + at, (b->n - at) * sizeof b->max[0]);
    memcpy(b->child + at, a->child + from, count * sizeof a->child[0]);
    memcpy(b->size + at, a->size + from, count * sizeof a->size[0]);
    memcpy(b->max + at, a->max + from, count * sizeof a->max[0]);
    uint32_t tail = a->n - from - count;
    memmove(a->child + from, a->child + from + count, tail * sizeof a->child[0]);
    memmove(a->size + from, a->size + from + count, tail * sizeof a->size[0]);
    memmove(a->max + from, a->max + from + count, tail * sizeof a->max[0]);
    a->n = (uint16_t)(a->n - count);
    b->n = (uint16_t)(b->n + count);
    refresh_cum(a);
    refresh_cum(b);
    a->summed = b->summed = 0;
}

static void values_move(leaf_t *a, uint32_t from, uint32_t count, leaf_t *b, uint32_t at)
{
    memmove(b->v + at + count, b->v + at, (b->n - at) * sizeof(double));
    memcpy(b->v + at, a->v + from, count * sizeof(double));
    memmove(a->v + from, a->v + from + count, (a->n - from - count) * sizeof(double));
    a->n = (uint16_t)(a->n - count);
    b->n = (uint16_t)(b->n + count);
    a->summed = b->summed = 0;
}

/* Moves count entries of the node at level d from the front or the end of one node to another. */
static void move_at(rtk_sortwin *w, int d, uint16_t from, uint32_t first, uint32_t count, uint16_t to, uint32_t at)
{
    if (d == w->height)
        values_move(leaf(w, from), first, count, leaf(w, to), at);
    else
        entries_move(inner(w, from), first, count, inner(w, to), at);
}

static uint32_t entries_at(const rtk_sortwin *w, int d, uint16_t i)
{
    return d == w->height ? leaf(w, i)->n : inner(w, i)->n;
}

/* Splits the full nodes on p from the leaf up, the root last (the tree grows one level). */
static void split_path(rtk_sortwin *w, path *p)
{
    for (int d = w->height; d >= 0; d--) {
        uint16_t x = p->node[d];
        uint32_t full = d == w->height ? LEAF : FAN;
        if (entries_at(w, d, x) < full)
            return;
        uint16_t y = take(w, d == w->height);
        move_at(w, d, x, full / 2, full / 2, y, 0);
        if (d == 0) { /* a new root above the old one */
            uint16_t r = take(w, 0);
            inner_t *a = inner(w, r);
            a->n = 2;
            a->child[0] = x;
            a->child[1] = y;
            w->root = r;
            w->height++;
            entry_from_child(w, a, 0, 0);
            entry_from_child(w, a, 1, 0);
            refresh_cum(a);
            return;
        }
        inner_t *a = inner(w, p->node[d - 1]);
        uint32_t c = p->idx[d - 1];
        entry_insert(a, c + 1, y);
        entry_from_child(w, a, c, d - 1);
        entry_from_child(w, a, c + 1, d - 1);
        refresh_cum(a);
        a->summed = 0;
    }
}

/* Refills the underfull nodes on p from the leaf up, from a sibling: one of its entries if it
   has one to spare, else the two merge. The root keeps at least two children, or goes. */
static void refill_path(rtk_sortwin *w, path *p)
{
    for (int d = w->height; d > 0; d--) {
        uint16_t x = p->node[d];
        if (entries_at(w, d, x) >= (d == w->height ? LEAF_MIN : FAN_MIN))
            break;
        inner_t *a = inner(w, p->node[d - 1]);
        uint32_t c = p->idx[d - 1], l = c > 0 ? c - 1 : c, r = l + 1;
        uint16_t left = a->child[l], right = a->child[r];
        uint32_t min = d == w->height ? LEAF_MIN : FAN_MIN;
        if (c == r && entries_at(w, d, left) > min) {
            move_at(w, d, left, entries_at(w, d, left) - 1, 1, x, 0);
        } else if (c == l && entries_at(w, d, right) > min) {
            move_at(w, d, right, 0, 1, x, entries_at(w, d, x));
        } else {
            move_at(w, d, right, 0, entries_at(w, d, right), left, entries_at(w, d, left));
            give(w, d == w->height, right);
            memmove(a->child + r, a->child + r + 1, (a->n - r - 1) * sizeof a->child[0]);
            memmove(a->size + r, a->size + r + 1, (a->n - r - 1) * sizeof a->size[0]);
            memmove(a->max + r, a->max + r + 1, (a->n - r - 1) * sizeof a->max[0]);
            a->n--;
            entry_from_child(w, a, l, d - 1);
            refresh_cum(a);
            a->summed = 0;
            continue;
        }
        entry_from_child(w, a, l, d - 1);
        entry_from_child(w, a, r, d - 1);
        refresh_cum(a);
        a->summed = 0;
        break;
    }
    while (w->height > 0 && inner(w, w->root)->n == 1) {
        uint16_t old = w->root;
        w->root = inner(w, old)->child[0];
        w->height--;
        give(w, 0, old);
    }
}

static void insert(rtk_sortwin *w, double x)
{
    path p;
    leaf_t *a = leaf(w, descend(w, x, &p));
    uint32_t j = lower_bound(a->v, a->n, x);
    memmove(a->v + j + 1, a->v + j, (a->n - j) * sizeof(double));
    a->v[j] = x;
    a->n++;
    a->summed = 0;
    resize_path(w, &p, 1);
    if (a->n == LEAF)
        split_path(w, &p);
}

/* Removes a value equal to x, which the window holds: its copy is bit-identical, so the lower
   bound finds it exactly. */
static void remove_value(rtk_sortwin *w, double x)
{
    path p;
    leaf_t *a = leaf(w, descend(w, x, &p));
    uint32_t i = lower_bound(a->v, a->n, x);
    memmove(a->v + i, a->v + i + 1, (a->n - i - 1) * sizeof(double));
    a->n--;
    a->summed = 0;
    resize_path(w, &p, -1);
    if (w->height > 0 && a->n < LEAF_MIN)
        refill_path(w, &p);
}

/* Moves a value equal to old (which the window holds) to x's place when the tree keeps its
   shape: in one leaf, the values between the two places shift by one, as in a sorted array;
   across two, the counts change only where the two paths part. Returns 0 when a leaf
   would overflow or underflow, for the general removal and insertion. */
static int replace(rtk_sortwin *w, double old, double x)
{
    path po, pn;
    leaf_t *a = leaf(w, descend(w, old, &po)), *b = leaf(w, descend(w, x, &pn));
    uint32_t i, j;
    lower_bounds(a->v, a->n, old, b->v, b->n, x, &i, &j);
    if (a == b) {
        if (j > i) {
            memmove(a->v + i, a->v + i + 1, (j - 1 - i) * sizeof(double));
            j--;
        } else {
            memmove(a->v + j + 1, a->v + j, (i - j) * sizeof(double));
        }
        a->v[j] = x;
        a->summed = 0;
        touch_path(w, &pn, i + 1 == a->n || j + 1 == a->n);
        return 1;
    }
    int up = w->height - 1; /* the leaves' parents */
    uint32_t ca = po.idx[up], cb = pn.idx[up];
    if (po.node[up] == pn.node[up] && (ca + 1 == cb || cb + 1 == ca)) {
        /* Neighbours: the values between the two places shift by one across their boundary,
           as in a sorted array, and every count stays. */
        if (ca < cb) {
            memmove(a->v + i, a->v + i + 1, (a->n - i - 1) * sizeof(double));
            if (j == 0) { /* x lies between the two */
                a->v[a->n - 1] = x;
            } else {
                a->v[a->n - 1] = b->v[0];
                memmove(b->v, b->v + 1, (j - 1) * sizeof(double));
                b->v[j - 1] = x;
            }
            touch_path(w, &po, 1);
            touch_path(w, &pn, j == b->n);
        } else { /* b's largest is at least x: x was sent there */
            memmove(a->v + 1, a->v, i * sizeof(double));
            a->v[0] = b->v[b->n - 1];
            memmove(b->v + j + 1, b->v + j, (b->n - 1 - j) * sizeof(double));
            b->v[j] = x;
            touch_path(w, &po, i + 1 == a->n);
            touch_path(w, &pn, 1);
        }
        a->summed = b->summed = 0;
        return 1;
    }
    if ((w->height > 0 && a->n <= LEAF_MIN) || b->n + 1 >= LEAF)
        return 0;
    memmove(a->v + i, a->v + i + 1, (a->n - i - 1) * sizeof(double));
    a->n--;
    memmove(b->v + j + 1, b->v + j, (b->n - j) * sizeof(double));
    b->v[j] = x;
    b->n++;
    a->summed = b->summed = 0;
    int d = 0;
    for (; d < w->height && po.node[d] == pn.node[d]; d++) { /* one node: one count down, one up */
        inner_t *c = inner(w, po.node[d]);
        uint32_t from = po.idx[d], to = pn.idx[d];
        c->size[from]--;
        c->size[to]++;
        for (uint32_t j = from; j < to; j++)
            c->cum[j]--;
        for (uint32_t j = to; j < from; j++)
            c->cum[j]++;
    }
    for (; d < w->height; d++) {
        count_from(inner(w, po.node[d]), po.idx[d], -1);
        count_from(inner(w, pn.node[d]), pn.idx[d], 1);
    }
    touch_path(w, &po, i == a->n);
    touch_path(w, &pn, j + 1 == b->n);
    return 1;
}

void rtk_sortwin_push(rtk_sortwin *w, double x)
{
    uint32_t tail = w->head;
    if (w->n < w->cap) {
        w->n++;
        insert(w, x);
    } else if (!replace(w, ring(w)[tail], x)) {
        remove_value(w, ring(w)[tail]);
        insert(w, x);
    }
    ring(w)[tail] = x;
    w->head = tail + 1 == w->cap ? 0 : tail + 1;
}

/* A leaf found by rank, kept for the next look-up: a search's probes mostly fall in the leaf
   of the one before. */
struct finger {
    const double *v;
    uint32_t first, n; /* the ranks of v: [first, first + n) */
};

/* Points f at the leaf holding rank k. */
static void locate(const rtk_sortwin *w, struct finger *f, uint32_t k)
{
    uint32_t r = k;
    uint16_t i = w->root;
    for (int d = 0; d < w->height; d++) {
        const inner_t *a = inner(w, i);
        i = a->child[child_by_rank(a, &r)];
    }
    f->v = leaf(w, i)->v;
    f->n = leaf(w, i)->n;
    f->first = k - r;
}

static inline double at(const rtk_sortwin *w, struct finger *f, uint32_t k)
{
    if (k - f->first >= f->n) /* also when k < first: the difference wraps */
        locate(w, f, k);
    return f->v[k - f->first];
}

double rtk_sortwin_rank(const rtk_sortwin *w, uint32_t k)
{
    struct finger f = {NULL, 0, 0};
    return at(w, &f, k);
}

/* How many values are below x. */
static uint32_t count_below(const rtk_sortwin *w, double x)
{
    uint16_t i = w->root;
    uint32_t k = 0;
    for (int d = 0; d < w->height; d++) {
        const inner_t *a = inner(w, i);
        uint32_t c = child_by_value(a, x);
        if (c)
            k += a->cum[c - 1];
        i = a->child[c];
    }
    return k + lower_bound(leaf(w, i)->v, leaf(w, i)->n, x);
}

double rtk_sortwin_median(const rtk_sortwin *w)
{
    if (w->n == 0)
        return 0.0;
    struct finger f = {NULL, 0, 0};
    uint32_t h = w->n / 2;
    return w->n & 1 ? at(w, &f, h) : 0.5 * (at(w, &f, h - 1) + at(w, &f, h));
}

double rtk_sortwin_mad(const rtk_sortwin *w, double median)
{
    if (w->n == 0)
        return 0.0;
    double m = median;
    struct finger low = {NULL, 0, 0}, high = {NULL, 0, 0};
    uint32_t h = w->n / 2, k = w->n & 1 ? h : h - 1;
    /* The count below m: h when m is the median of distinct middle values, found by two
       look-ups where a search by value would take a dozen steps. */
    int middle = 0;
    if (h > 0) {
        middle = at(w, &low, h - 1) < m;
        high = low; /* mostly the same leaf */
        middle = middle && m <= at(w, &high, h);
    }
    uint32_t p = middle ? h : count_below(w, m);
    /* The k + 1 values nearest to m are consecutive in order, ranks [first, first + k]: the
       first place where dropping the lowest for the next above would bring no nearer one
       (a test true up to there, false from there). It lies within k + 1 of p, the count
       below m, and moves little from one sample to the next: the search gallops from where
       the last one ended, then halves. */
    uint32_t lo = p > k + 1 ? p - k - 1 : 0, hi = p < w->n - k - 1 ? p : w->n - k - 1;
    uint32_t g = hint(w)->mad_first;
    g = g < lo ? lo : g > hi ? hi : g;
#define NEARER(l) ((l) < hi && at(w, &high, (l) + k + 1) - m < m - at(w, &low, (l)))
    if (NEARER(g)) {
        uint32_t step = 1;
        lo = g + 1;
        while (g + step < hi && NEARER(g + step)) {
            lo = g + step + 1;
            step *= 2;
        }
        hi = g + step < hi ? g + step : hi;
    } else {
        uint32_t step = 1;
        hi = g;
        while (g >= lo + step && !NEARER(g - step)) {
            hi = g - step;
            step *= 2;
        }
        lo = g >= lo + step ? g - step + 1 : lo;
    }
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int nearer = NEARER(mid);
        lo = nearer ? mid + 1 : lo;
        hi = nearer ? hi : mid;
    }
#undef NEARER
    hint(w)->mad_first = lo;
    uint32_t first = lo;
    /* The k-th distance is the farther end's; the next one the nearer of the two neighbours'. */
    double below = m - at(w, &low, first), above = at(w, &high, first + k) - m;
    double kth = below > above ? below : above;
    if (w->n & 1)
        return kth;
    below = first > 0 ? m - at(w, &low, first - 1) : -1;
    above = first + k + 1 < w->n ? at(w, &high, first + k + 1) - m : -1;
    double next = below < 0 ? above : above < 0 ? below : below < above ? below : above;
    return 0.5 * (kth + next);
}

/* The sum of a node's values at level d, summed again only if it changed: in ascending order,
   so it depends on the values and the tree's shape alone. */
static double node_sum(rtk_sortwin *w, int d, uint16_t i)
{
    if (d == w->height) {
        leaf_t *a = leaf(w, i);
        if (!a->summed) {
            double s = 0;
            for (uint32_t j = 0; j < a->n; j++)
                s += a->v[j];
            a->sum = s;
            a->summed = 1;
        }
        return a->sum;
    }
    inner_t *a = inner(w, i);
    if (!a->summed) {
        double s = 0;
        for (uint32_t j = 0; j < a->n; j++)
            s += node_sum(w, d + 1, a->child[j]);
        a->sum = s;
        a->summed = 1;
    }
    return a->sum;
}

double rtk_sortwin_abs_dev_sum(rtk_sortwin *w, double centre)
{
    /* The values under centre and the rest summed apart, each against its count: O(log n),
       in another order than one by one (a last-bit difference, for a last-resort scale). */
    double under = 0, over = 0;
    uint32_t count = 0;
    uint16_t i = w->root;
    for (int d = 0; d < w->height; d++) {
        const inner_t *a = inner(w, i);
        uint32_t c = child_by_value(a, centre);
        for (uint32_t j = 0; j < a->n; j++)
            if (j != c)
                *(j < c ? &under : &over) += node_sum(w, d + 1, a->child[j]);
        if (c)
            count += a->cum[c - 1];
        i = a->child[c];
    }
    const leaf_t *a = leaf(w, i);
    uint32_t j = lower_bound(a->v, a->n, centre);
    count += j;
    for (uint32_t t = 0; t < a->n; t++)
        *(t < j ? &under : &over) += a->v[t];
    return (count * centre - under) + (over - (w->n - count) * centre);
}

double rtk_sortwin_quantile(const rtk_sortwin *w, double q)
{
    if (w->n == 0)
        return 0.0;
    return rtk_sortwin_rank(w, (uint32_t)(q * (w->n - 1)));
}
