/* The native core's own tests: the same cases the Python suite checks, runnable
 * without Python (and under qemu-user for cross targets). Exit status 0 = pass. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"
#include "delta.h"
#include "history.h"
#include "jitter.h"
#include "sampler.h"
#include "stats.h"
#include "check.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double sorted_quantile(const double *v, uint32_t n, double q)
{
    double tmp[512];
    memcpy(tmp, v, n * sizeof *tmp);
    qsort(tmp, n, sizeof *tmp, cmp_double);
    double pos = q * (n - 1);
    uint32_t k = (uint32_t)pos;
    double frac = pos - k;
    return k + 1 < n ? tmp[k] + frac * (tmp[k + 1] - tmp[k]) : tmp[k];
}

static void test_rolling_matches_naive(void)
{
    static double ring[512], values[2000], scratch[512];
    for (uint32_t window = 1; window <= 64; window += 7) {
        rtk_rolling r;
        rtk_rolling_init(&r, ring, 512, 1, 1, window, 0.1);
        for (int i = 0; i < 2000; i++) {
            values[i] = (i % 100 == 0) ? 1e5 : lcg();
            uint32_t n = (uint32_t)(i < (int)window ? i : (int)window);
            double mean = 0, var = 0;
            for (uint32_t k = 0; k < n; k++)
                mean += values[i - 1 - k];
            mean = n ? mean / n : 0;
            for (uint32_t k = 0; k < n; k++)
                var += (values[i - 1 - k] - mean) * (values[i - 1 - k] - mean);
            var = n > 1 ? var / (n - 1) : 0;
            double want_z = var > 0 ? (values[i] - mean) / sqrt(var) : 0.0;
            rtk_rolling_push(&r, &values[i]);
            double z = r.z[0];
            CHECK(!isnan(z));
            if (var > 1e-6)
                CHECK(near(z, want_z, 1e-6));
        }
        uint32_t n = window;
        double mn = values[1999], mx = values[1999];
        for (uint32_t k = 0; k < n; k++) {
            double x = values[1999 - k];
            mn = x < mn ? x : mn;
            mx = x > mx ? x : mx;
        }
        CHECK(rtk_rolling_min(&r, 0) == mn);
        CHECK(rtk_rolling_max(&r, 0) == mx);
        rtk_summary s;
        rtk_rolling_summary(&r, 0, 0, scratch, &s);
        CHECK(s.n == n);
        CHECK(near(s.p50, sorted_quantile(values + 2000 - n, n, 0.5), 1e-12));
        CHECK(near(s.p95, sorted_quantile(values + 2000 - n, n, 0.95), 1e-12));
        CHECK(near(s.p99, sorted_quantile(values + 2000 - n, n, 0.99), 1e-12));
    }
}

static void test_empty_window_is_nan_free(void)
{
    double ring[8], scratch[8];
    rtk_rolling r;
    rtk_rolling_init(&r, ring, 8, 1, 1, 4, 0.5);
    rtk_summary s;
    rtk_rolling_summary(&r, 0, 0, scratch, &s);
    CHECK(s.n == 0 && s.mean == 0 && s.std == 0 && s.p99 == 0 && s.mad == 0);
    double three = 3.0;
    rtk_rolling_push(&r, &three);
    CHECK(r.z[0] == 0.0);
    rtk_rolling_push(&r, &three);
    CHECK(r.z[0] == 0.0 && rtk_rolling_std(&r, 0) == 0.0);
}

static void test_median_mad(void)
{
    double v[] = {1, 2, 3, 4, 100};
    double med, mad;
    rtk_median_mad(v, 5, &med, &mad);
    CHECK(med == 3.0 && mad == 1.0);
}

static void test_counter_deltas(void)
{
    int kind;
    CHECK(rtk_counter_delta(100, 250, &kind) == 150 && kind == RTK_DELTA_OK);
    CHECK(rtk_counter_delta(0xffffffffull - 9, 5, &kind) == 15 && kind == RTK_DELTA_WRAP32);
    CHECK(rtk_counter_delta(10ull << 32, 5000, &kind) == 5000 && kind == RTK_DELTA_RESET);
    CHECK(rtk_counter_delta(3000000000ull, 2000000000ull, &kind) == 2000000000ull && kind == RTK_DELTA_RESET);
    uint64_t prev[8] = {3000000000ull, 0, 2000000, 0, 0, 0, 0, 0};
    uint64_t cur[8] = {1000, 0, 10, 0, 0, 0, 0, 0};
    uint64_t out[8];
    CHECK(rtk_link_deltas(prev, cur, out) == RTK_DELTA_RESET);
    CHECK(out[0] == 1000 && out[2] == 10);
}

static void test_jitter(void)
{
    rtk_jitter j;
    rtk_jitter_init(&j);
    double delays[] = {10, 12, 11, 15, 15};
    double want = 0, sum = 0;
    for (int i = 0; i < 5; i++) {
        rtk_jitter_update(&j, delays[i]);
        if (i) {
            double d = fabs(delays[i] - delays[i - 1]);
            want += (d - want) / 16;
            sum += d;
        }
    }
    CHECK(near(j.jitter, want, 1e-12));
    CHECK(near(rtk_jitter_ipdv_mean(&j), sum / 4, 1e-12));
    CHECK(j.ipdv_max == 4.0);
}

static void test_proc_net_dev_parser(void)
{
    const char *text =
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n"
        "    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n"
        "  eth0: 18446744073709551615 7 1 2 0 0 0 0 300 8 3 4 0 0 0 0\n";
    rtk_link links[4];
    int n = rtk_parse_proc_net_dev(text, strlen(text), links, 4, NULL, NULL);
    CHECK(n == 2);
    CHECK(strcmp(links[1].name, "eth0") == 0);
    CHECK(links[1].c[RTK_RX_BYTES] == 18446744073709551615ull);
    CHECK(links[1].c[RTK_RX_PACKETS] == 7 && links[1].c[RTK_TX_BYTES] == 300);
    CHECK(links[1].c[RTK_RX_ERRORS] == 1 && links[1].c[RTK_RX_DROPPED] == 2);
    CHECK(links[1].c[RTK_TX_ERRORS] == 3 && links[1].c[RTK_TX_DROPPED] == 4);
}

/* Appends bytes in host order: netlink is host-endian on every target. */
static size_t put(unsigned char *buf, size_t off, const void *src, size_t len)
{
    memcpy(buf + off, src, len);
    return off + len;
}

static size_t put_stats_msg(unsigned char *buf, size_t off, uint32_t ifindex, uint64_t base)
{
    size_t start = off;
    uint32_t len32 = 0;
    uint16_t type = 92 /* RTM_NEWSTATS */, flags = 2 /* NLM_F_MULTI */;
    uint32_t seq = 7, pid = 0;
    off = put(buf, off, &len32, 4); /* patched below */
    off = put(buf, off, &type, 2);
    off = put(buf, off, &flags, 2);
    off = put(buf, off, &seq, 4);
    off = put(buf, off, &pid, 4);
    uint8_t family = 0, pad1 = 0;
    uint16_t pad2 = 0;
    uint32_t filter = 1;
    off = put(buf, off, &family, 1);
    off = put(buf, off, &pad1, 1);
    off = put(buf, off, &pad2, 2);
    off = put(buf, off, &ifindex, 4);
    off = put(buf, off, &filter, 4);
    /* A padding attribute first, as the kernel adds to align 64-bit payloads. */
    uint16_t pad_len = 4, pad_type = 6 /* IFLA_STATS_AF_SPEC+1: not one we read */;
    off = put(buf, off, &pad_len, 2);
    off = put(buf, off, &pad_type, 2);
    uint16_t alen = 4 + 24 * 8, atype = 1 /* IFLA_STATS_LINK_64 */;
    off = put(buf, off, &alen, 2);
    off = put(buf, off, &atype, 2);
    for (uint64_t i = 0; i < 24; i++) {
        uint64_t v = base + i; /* rx_packets, tx_packets, rx_bytes, tx_bytes, ... */
        off = put(buf, off, &v, 8);
    }
    len32 = (uint32_t)(off - start);
    put(buf, start, &len32, 4);
    return off;
}

static void test_netlink_stats_dump_parser_host_order_and_misaligned(void)
{
    static unsigned char storage[1024 + 8];
    unsigned char *buf = storage + 4; /* 4 past an 8-aligned start: u64 fields land misaligned */
    size_t off = put_stats_msg(buf, 0, 2, 1000);
    off = put_stats_msg(buf, off, 7, 5000000000ull);
    struct { uint32_t len; uint16_t type, flags; uint32_t seq, pid; int32_t status; } done = {20, 3, 2, 7, 0, 0};
    off = put(buf, off, &done, sizeof done);
    rtk_link links[4];
    int n = rtk_parse_stats_dump(buf, off, links, 4);
    CHECK(n == 2);
    CHECK(links[0].ifindex == 2 && links[1].ifindex == 7);
    CHECK(links[0].c[RTK_RX_PACKETS] == 1000 && links[0].c[RTK_TX_PACKETS] == 1001);
    CHECK(links[0].c[RTK_RX_BYTES] == 1002 && links[0].c[RTK_TX_BYTES] == 1003);
    CHECK(links[0].c[RTK_RX_ERRORS] == 1004 && links[0].c[RTK_TX_DROPPED] == 1007);
    CHECK(links[1].c[RTK_RX_BYTES] == 5000000002ull);
    CHECK(rtk_parse_stats_dump(buf, off - 3, links, 4) == -EBADMSG); /* truncated */
}

static void test_sampler_wraps_and_lifetimes(void)
{
    size_t bytes = rtk_sampler_arena_size(4, 256);
    void *arena = malloc(bytes);
    CHECK(arena != NULL);
    if (!arena)
        return;
    rtk_sampler s;
    rtk_sampler_init(&s, arena, 4, 256, 8, 0.1);
    rtk_link l;
    memset(&l, 0, sizeof l);
    l.ifindex = 3;
    strcpy(l.name, "wan");
    uint64_t counter = 0xffffffffull - 5000, truth = 0;
    for (int t = 0; t < 100; t++) {
        l.c[RTK_RX_BYTES] = counter;
        rtk_sampler_ingest(&s, &l, 1, (double)t);
        if (t)
            truth += 700000000ull;
        counter = (counter + 700000000ull) & 0xffffffffull;
    }
    CHECK(s.slots[0].total[RTK_RX_BYTES] == truth);
    CHECK(s.slots[0].wraps > 10 && s.slots[0].resets == 0);
    double v;
    CHECK(rtk_sampler_value_at(&s, 0, RTK_RX_BYTES, 99, &v) && v == 700000000.0);
    rtk_sampler_ingest(&s, &l, 0, 100.0);
    CHECK(s.slots[0].state == RTK_SLOT_GONE && s.vanished == 1);
    l.ifindex = 9;
    rtk_sampler_ingest(&s, &l, 1, 101.0);
    CHECK(s.nslots == 2 && s.appeared == 1);
    free(arena);
}

static void test_live_counters_both_paths(void)
{
    static rtk_reader r, p;
    static rtk_link a[RTK_MAX_LINKS], b[RTK_MAX_LINKS];
    int rn = rtk_reader_open(&r, 0), pn = rtk_reader_open(&p, RTK_FORCE_PROCFS);
    CHECK(rn == 0 && pn == 0);
    if (rn || pn)
        return;
    int n1 = rtk_reader_read(&r, a, RTK_MAX_LINKS), n2 = rtk_reader_read(&p, b, RTK_MAX_LINKS);
    CHECK(n1 > 0 && n1 == n2);
    int matched = 0;
    for (int i = 0; i < n1; i++)
        for (int k = 0; k < n2; k++)
            if (a[i].ifindex == b[k].ifindex && strcmp(a[i].name, b[k].name) == 0)
                matched++;
    CHECK(matched == n1);
    printf("counters: %d links via %s and procfs\n", n1, r.source == RTK_SRC_NETLINK ? "netlink" : "procfs");
    rtk_reader_close(&r);
    rtk_reader_close(&p);
}

static void test_history_tiers_gaps_and_persistence(void)
{
    /* Small tiers so wrap-around is exercised: 8 x 1 s, 6 x 4 s, 3 x 12 s. */
    const uint32_t cap[RTK_HIST_TIERS] = {8, 6, 3};
    const int64_t step[RTK_HIST_TIERS] = {1, 4, 12};
    static rtk_hbucket arena[17], arena2[17];
    rtk_history h, back;
    CHECK(rtk_history_arena_size(cap) == sizeof arena);
    CHECK(rtk_history_init(&h, arena, cap, step) == 0);
    const int64_t bad_step[RTK_HIST_TIERS] = {1, 4, 10};
    CHECK(rtk_history_init(&back, arena2, cap, bad_step) == -1);
    /* t = 1000..1011, value = t - 1000, a spike of 100 at t = 1005 (score 0.9). */
    for (int64_t t = 1000; t < 1012; t++)
        CHECK(rtk_history_push(&h, t, t == 1005 ? 100.0f : (float)(t - 1000), t == 1005 ? 0.9f : 0.1f) == 0);
    CHECK(rtk_history_push(&h, 990, 1.0f, 0.0f) == -1); /* out of order */
    rtk_hbucket out[8];
    CHECK(rtk_history_read(&h, 0, 1004, 1011, out) == 8);
    CHECK(out[0].mean == 4.0f && out[1].max == 100.0f && out[1].score == 0.9f && out[7].min == 11.0f);
    CHECK(rtk_history_read(&h, 0, 1003, 1003, out) == 1 && isnan(out[0].mean)); /* no longer kept */
    /* 4 s buckets 250 (1000-1003), 251 (1004-1007: 4, 100, 6, 7), 252 (1008-1011). */
    CHECK(rtk_history_read(&h, 1, 250, 252, out) == 3);
    CHECK(out[0].min == 0.0f && out[0].max == 3.0f && out[0].mean == 1.5f);
    CHECK(out[1].min == 4.0f && out[1].max == 100.0f && near(out[1].mean, 117.0 / 4, 1e-6) && out[1].score == 0.9f);
    /* A gap of 20 s: skipped buckets read missing, not stale. */
    CHECK(rtk_history_push(&h, 1031, 7.0f, 0.0f) == 0);
    CHECK(rtk_history_read(&h, 0, 1029, 1031, out) == 3 && isnan(out[0].mean) && isnan(out[1].max) && out[2].mean == 7.0f);
    CHECK(rtk_history_read(&h, 1, 256, 257, out) == 2 && isnan(out[0].mean) && out[1].mean == 7.0f);
    /* 12 s tier: bucket 83 (996-1007) holds 0..7 and the spike, 84 (1008-1019) 8..11,
       85 (1020-1031) only the 7. */
    CHECK(rtk_history_read(&h, 2, 83, 85, out) == 3 && out[0].max == 100.0f && out[1].mean == 9.5f &&
          out[2].mean == 7.0f);
    /* Round trip, and every refusal. */
    size_t size = rtk_history_serialized_size(&h);
    uint8_t *blob = malloc(size);
    rtk_history_serialize(&h, blob);
    CHECK(rtk_history_init(&back, arena2, cap, step) == 0);
    CHECK(rtk_history_deserialize(&back, blob, size) == 0);
    CHECK(back.samples == h.samples && memcmp(arena, arena2, sizeof arena) == 0);
    CHECK(rtk_history_push(&back, 1031, 9.0f, 0.0f) == 0);  /* the running mean continues */
    CHECK(rtk_history_read(&back, 0, 1031, 1031, out) == 1 && out[0].mean == 8.0f);
    CHECK(rtk_history_deserialize(&back, blob, size - 1) == RTK_HIST_ESHORT);
    blob[0] = 'X';
    CHECK(rtk_history_deserialize(&back, blob, size) == RTK_HIST_EMAGIC);
    blob[0] = 'R';
    blob[8] ^= 0xff;
    CHECK(rtk_history_deserialize(&back, blob, size) == RTK_HIST_EORDER);
    blob[8] ^= 0xff;
    const uint32_t other_cap[RTK_HIST_TIERS] = {8, 6, 4};
    static rtk_hbucket arena3[18];
    CHECK(rtk_history_init(&back, arena3, other_cap, step) == 0);
    CHECK(rtk_history_deserialize(&back, blob, size) == RTK_HIST_ESHAPE);
    free(blob);
}

int main(void)
{
    RUN_TEST(test_rolling_matches_naive);
    RUN_TEST(test_empty_window_is_nan_free);
    RUN_TEST(test_median_mad);
    RUN_TEST(test_counter_deltas);
    RUN_TEST(test_jitter);
    RUN_TEST(test_proc_net_dev_parser);
    RUN_TEST(test_netlink_stats_dump_parser_host_order_and_misaligned);
    RUN_TEST(test_sampler_wraps_and_lifetimes);
    RUN_TEST(test_live_counters_both_paths);
    RUN_TEST(test_history_tiers_gaps_and_persistence);
    return TEST_SUMMARY("native core");
}
