/* Kernel interface counters: one snapshot of every link in one call.
 *
 * Primary path: a netlink RTM_GETSTATS dump filtered to IFLA_STATS_LINK_64
 * (binary, 64-bit counters, kernel >= 4.7). Names are not in that dump; they
 * come from an RTM_GETLINK dump that is repeated only when a second netlink
 * socket, subscribed to link events, says a link appeared, vanished or was
 * renamed. Fallback: /proc/net/dev, for older kernels or refused netlink.
 * No allocation after rtk_reader_open; no dependency on Python.
 */
#ifndef RTK_COUNTERS_H
#define RTK_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

#define RTK_IFNAMSIZ 16
#define RTK_MAX_LINKS 1024
#define RTK_NL_BUFSZ (64 * 1024)

enum rtk_counter {
    RTK_RX_BYTES, RTK_TX_BYTES, RTK_RX_PACKETS, RTK_TX_PACKETS,
    RTK_RX_ERRORS, RTK_TX_ERRORS, RTK_RX_DROPPED, RTK_TX_DROPPED,
    RTK_NCOUNTERS
};

enum rtk_source { RTK_SRC_NETLINK = 1, RTK_SRC_PROCFS = 2 };

typedef struct {
    int32_t ifindex;
    char name[RTK_IFNAMSIZ];
    uint64_t c[RTK_NCOUNTERS];
} rtk_link;

typedef struct {
    int32_t ifindex;
    char name[RTK_IFNAMSIZ];
} rtk_name;

typedef struct {
    int source;
    int fd;      /* netlink dump socket, or the /proc/net/dev descriptor */
    int mon_fd;  /* link-event socket; -1 when unavailable (names then refreshed by procfs) */
    uint32_t seq;
    int names_stale;
    int nnames;
    rtk_name names[RTK_MAX_LINKS];
    /* Netlink messages carry 64-bit fields; keep the buffer 8-aligned anyway,
       though every field is read with memcpy. */
    union { unsigned char bytes[RTK_NL_BUFSZ]; uint64_t align; } buf;
} rtk_reader;

/* Flags for rtk_reader_open. */
#define RTK_FORCE_PROCFS 1

/* Returns 0 or -errno. Chooses netlink when the kernel answers RTM_GETSTATS. */
int rtk_reader_open(rtk_reader *r, int flags);
void rtk_reader_close(rtk_reader *r);

/* Fills up to cap links; returns how many, or -errno. */
int rtk_reader_read(rtk_reader *r, rtk_link *out, int cap);

/* The floor the benchmarks compare against: the RTM_GETSTATS request and
   every receive, with no parsing. Returns bytes received or -errno. */
long rtk_reader_raw_dump(rtk_reader *r);

/* Parses the RTM_NEWSTATS messages of a dump (host byte order, any alignment)
   into links without names; exposed so tests can feed synthetic dumps on every
   target. Returns links parsed or -errno. */
int rtk_parse_stats_dump(const void *buf, size_t len, rtk_link *out, int cap);

/* Parses /proc/net/dev text (exposed for tests and the procfs path).
   `resolve` maps a name to an ifindex (0 when unknown). Returns links parsed. */
int rtk_parse_proc_net_dev(const char *text, size_t len, rtk_link *out, int cap,
                           int32_t (*resolve)(void *ctx, const char *name), void *ctx);

#endif
