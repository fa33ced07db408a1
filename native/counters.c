#include "counters.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/* Spelled out here so the core builds against kernel headers older than 4.7
   (the uapi values are fixed ABI). */
#ifndef RTM_GETSTATS
#define RTM_GETSTATS 94
#endif
#define RTK_RTM_NEWSTATS 92
#define RTK_IFLA_STATS_LINK_64 1
#define RTK_IFLA_IFNAME 3

struct rtk_if_stats_msg { /* struct if_stats_msg */
    uint8_t family, pad1;
    uint16_t pad2;
    uint32_t ifindex;
    uint32_t filter_mask;
};

/* Offsets in struct rtnl_link_stats64 of the counters we keep, in enum order. */
static const uint8_t stats64_offset[RTK_NCOUNTERS] = {
    2 * 8, /* rx_bytes */ 3 * 8, /* tx_bytes */ 0 * 8, /* rx_packets */ 1 * 8, /* tx_packets */
    4 * 8, /* rx_errors */ 5 * 8, /* tx_errors */ 6 * 8, /* rx_dropped */ 7 * 8 /* tx_dropped */
};

static int nl_socket(uint32_t groups)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof sa);
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = groups;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int nl_request(rtk_reader *r, uint16_t type, const void *body, size_t body_len)
{
    struct {
        struct nlmsghdr nh;
        unsigned char body[16];
    } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = (uint32_t)NLMSG_LENGTH(body_len);
    req.nh.nlmsg_type = type;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.nh.nlmsg_seq = ++r->seq;
    memcpy(req.body, body, body_len);
    if (send(r->fd, &req, req.nh.nlmsg_len, 0) < 0)
        return -errno;
    return 0;
}

typedef int (*nl_visit)(rtk_reader *r, const struct nlmsghdr *nh, void *ctx);

/* Walks the netlink messages in buf[0..len). Returns 1 at NLMSG_DONE, 0 when
   more datagrams follow, or -errno. Messages of other sequence numbers (a
   stale reply) are skipped; seq 0 accepts any. */
static int nl_walk(rtk_reader *r, const unsigned char *buf, size_t len, uint32_t seq,
                   nl_visit visit, void *ctx)
{
    size_t off = 0;
    while (off + sizeof(struct nlmsghdr) <= len) {
        struct nlmsghdr nh;
        memcpy(&nh, buf + off, sizeof nh);
        if (nh.nlmsg_len < sizeof nh || off + nh.nlmsg_len > len)
            return -EBADMSG;
        if (seq == 0 || nh.nlmsg_seq == seq) {
            if (nh.nlmsg_type == NLMSG_DONE)
                return 1;
            if (nh.nlmsg_type == NLMSG_ERROR) {
                int32_t err = -EBADMSG;
                if (nh.nlmsg_len >= NLMSG_LENGTH(sizeof err))
                    memcpy(&err, buf + off + NLMSG_HDRLEN, sizeof err);
                return err ? err : -EBADMSG;
            }
            if (visit) {
                int rc = visit(r, (const struct nlmsghdr *)(const void *)(buf + off), ctx);
                if (rc < 0)
                    return rc;
            }
        }
        off += NLMSG_ALIGN(nh.nlmsg_len);
    }
    return 0;
}

/* Receives the datagrams of a dump until NLMSG_DONE. Returns bytes received or -errno. */
static long nl_dump(rtk_reader *r, nl_visit visit, void *ctx)
{
    long total = 0;
    for (;;) {
        ssize_t n = recv(r->fd, r->buf.bytes, sizeof r->buf.bytes, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        total += n;
        int rc = nl_walk(r, r->buf.bytes, (size_t)n, r->seq, visit, ctx);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return total;
    }
}

/* Finds attribute `type` among the attributes in [p, end). */
static const unsigned char *find_attr(const unsigned char *p, const unsigned char *end,
                                      uint16_t type, uint16_t *len)
{
    while (p + sizeof(struct nlattr) <= end) {
        struct nlattr a;
        memcpy(&a, p, sizeof a);
        if (a.nla_len < sizeof a || p + a.nla_len > end)
            return NULL;
        if ((a.nla_type & NLA_TYPE_MASK) == type) {
            *len = (uint16_t)(a.nla_len - NLA_HDRLEN);
            return p + NLA_HDRLEN;
        }
        p += NLA_ALIGN(a.nla_len);
    }
    return NULL;
}

/* Visitors get a pointer into the receive buffer that may not be aligned for
   struct nlmsghdr (a test feeds misaligned dumps on purpose): copy the header. */
static struct nlmsghdr header_of(const struct nlmsghdr *p)
{
    struct nlmsghdr nh;
    memcpy(&nh, p, sizeof nh);
    return nh;
}

static int visit_name(rtk_reader *r, const struct nlmsghdr *p, void *ctx)
{
    (void)ctx;
    struct nlmsghdr nh = header_of(p);
    if (nh.nlmsg_type != RTM_NEWLINK || r->nnames >= RTK_MAX_LINKS)
        return 0;
    const unsigned char *msg = (const unsigned char *)p;
    const unsigned char *end = msg + nh.nlmsg_len;
    const unsigned char *attrs = msg + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct ifinfomsg));
    if (attrs > end)
        return -EBADMSG;
    struct ifinfomsg ifi;
    memcpy(&ifi, msg + NLMSG_HDRLEN, sizeof ifi);
    uint16_t len = 0;
    const unsigned char *name = find_attr(attrs, end, RTK_IFLA_IFNAME, &len);
    rtk_name *slot = &r->names[r->nnames++];
    slot->ifindex = ifi.ifi_index;
    memset(slot->name, 0, sizeof slot->name);
    if (name)
        memcpy(slot->name, name, len < RTK_IFNAMSIZ - 1 ? len : RTK_IFNAMSIZ - 1);
    return 0;
}

static int refresh_names(rtk_reader *r)
{
    struct ifinfomsg ifi;
    memset(&ifi, 0, sizeof ifi);
    ifi.ifi_family = AF_UNSPEC;
    int rc = nl_request(r, RTM_GETLINK, &ifi, sizeof ifi);
    if (rc < 0)
        return rc;
    r->nnames = 0;
    long got = nl_dump(r, visit_name, NULL);
    if (got < 0)
        return (int)got;
    r->names_stale = 0;
    return 0;
}

/* Drains pending link events; any event (or an overrun) means names may have changed. */
static void drain_link_events(rtk_reader *r)
{
    if (r->mon_fd < 0)
        return;
    for (;;) {
        ssize_t n = recv(r->mon_fd, r->buf.bytes, sizeof r->buf.bytes, MSG_DONTWAIT);
        if (n > 0 || (n < 0 && errno == ENOBUFS)) {
            r->names_stale = 1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return;
    }
}

/* Names are found by a hint (the same position as last time: the dump order is
   stable), then by a scan. */
static const char *name_of(const rtk_reader *r, int32_t ifindex, int hint)
{
    if (hint < r->nnames && r->names[hint].ifindex == ifindex)
        return r->names[hint].name;
    for (int i = 0; i < r->nnames; i++)
        if (r->names[i].ifindex == ifindex)
            return r->names[i].name;
    return NULL;
}

struct stats_ctx {
    rtk_link *out;
    int cap, n, missing_name;
};

static int visit_stats(rtk_reader *r, const struct nlmsghdr *p, void *vctx)
{
    struct stats_ctx *ctx = vctx;
    struct nlmsghdr nh = header_of(p);
    if (nh.nlmsg_type != RTK_RTM_NEWSTATS || ctx->n >= ctx->cap)
        return 0;
    const unsigned char *msg = (const unsigned char *)p;
    const unsigned char *end = msg + nh.nlmsg_len;
    const unsigned char *attrs = msg + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct rtk_if_stats_msg));
    if (attrs > end)
        return -EBADMSG;
    struct rtk_if_stats_msg ifsm;
    memcpy(&ifsm, msg + NLMSG_HDRLEN, sizeof ifsm);
    uint16_t len = 0;
    const unsigned char *st = find_attr(attrs, end, RTK_IFLA_STATS_LINK_64, &len);
    if (!st || len < 8 * 8)
        return 0;
    rtk_link *l = &ctx->out[ctx->n];
    l->ifindex = (int32_t)ifsm.ifindex;
    for (int i = 0; i < RTK_NCOUNTERS; i++)
        memcpy(&l->c[i], st + stats64_offset[i], sizeof l->c[i]);
    const char *name = r ? name_of(r, l->ifindex, ctx->n) : NULL;
    if (name)
        memcpy(l->name, name, RTK_IFNAMSIZ);
    else {
        memset(l->name, 0, RTK_IFNAMSIZ);
        ctx->missing_name = 1;
    }
    ctx->n++;
    return 0;
}

static int stats_request(rtk_reader *r)
{
    struct rtk_if_stats_msg ifsm;
    memset(&ifsm, 0, sizeof ifsm);
    ifsm.family = AF_UNSPEC;
    ifsm.filter_mask = 1u << (RTK_IFLA_STATS_LINK_64 - 1);
    return nl_request(r, RTM_GETSTATS, &ifsm, sizeof ifsm);
}

static int read_netlink(rtk_reader *r, rtk_link *out, int cap)
{
    drain_link_events(r);
    if (r->names_stale) {
        int rc = refresh_names(r);
        if (rc < 0)
            return rc;
    }
    struct stats_ctx ctx = {out, cap, 0, 0};
    int rc = stats_request(r);
    if (rc < 0)
        return rc;
    long got = nl_dump(r, visit_stats, &ctx);
    if (got < 0)
        return (int)got;
    if (ctx.missing_name) {
        /* A link appeared between the events and the dump: name it now. */
        rc = refresh_names(r);
        if (rc < 0)
            return rc;
        for (int i = 0; i < ctx.n; i++) {
            const char *name = name_of(r, out[i].ifindex, i);
            if (name)
                memcpy(out[i].name, name, RTK_IFNAMSIZ);
        }
    }
    return ctx.n;
}

/* ---- /proc/net/dev ---- */

static const char *skip_spaces(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *parse_u64(const char *p, const char *end, uint64_t *v)
{
    uint64_t x = 0;
    p = skip_spaces(p, end);
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (uint64_t)(*p++ - '0');
    *v = x;
    return p == start ? NULL : p;
}

/* Field positions in a /proc/net/dev line (rx: bytes packets errs drop fifo frame
   compressed multicast; tx: bytes packets errs drop ...) for each enum counter. */
static const uint8_t procfs_field[RTK_NCOUNTERS] = {0, 8, 1, 9, 2, 10, 3, 11};

int rtk_parse_proc_net_dev(const char *text, size_t len, rtk_link *out, int cap,
                           int32_t (*resolve)(void *ctx, const char *name), void *ctx)
{
    const char *p = text, *end = text + len;
    int n = 0, line = 0;
    while (p < end && n < cap) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if (line++ >= 2) { /* two header lines */
            const char *q = skip_spaces(p, eol);
            const char *colon = memchr(q, ':', (size_t)(eol - q));
            size_t name_len = colon ? (size_t)(colon - q) : 0;
            if (colon && name_len > 0 && name_len < RTK_IFNAMSIZ) {
                rtk_link *l = &out[n];
                memset(l->name, 0, RTK_IFNAMSIZ);
                memcpy(l->name, q, name_len);
                uint64_t fields[16];
                const char *f = colon + 1;
                int nf = 0;
                while (nf < 16 && f && f < eol)
                    f = parse_u64(f, eol, &fields[nf++]);
                if (f && nf == 16) {
                    for (int i = 0; i < RTK_NCOUNTERS; i++)
                        l->c[i] = fields[procfs_field[i]];
                    l->ifindex = resolve ? resolve(ctx, l->name) : 0;
                    n++;
                }
            }
        }
        p = eol + 1;
    }
    return n;
}

/* In the procfs path names are the key; the ifindex of a new name is asked once. */
static int32_t resolve_cached(void *vr, const char *name)
{
    rtk_reader *r = vr;
    for (int i = 0; i < r->nnames; i++)
        if (strncmp(r->names[i].name, name, RTK_IFNAMSIZ) == 0)
            return r->names[i].ifindex;
    int32_t ifindex = (int32_t)if_nametoindex(name);
    if (ifindex > 0 && r->nnames < RTK_MAX_LINKS) {
        rtk_name *slot = &r->names[r->nnames++];
        memcpy(slot->name, name, RTK_IFNAMSIZ);
        slot->ifindex = ifindex;
    }
    return ifindex;
}

static int read_procfs(rtk_reader *r, rtk_link *out, int cap)
{
    drain_link_events(r);
    if (r->names_stale) {
        r->nnames = 0;
        r->names_stale = 0;
    }
    if (lseek(r->fd, 0, SEEK_SET) < 0)
        return -errno;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(r->fd, r->buf.bytes + len, sizeof r->buf.bytes - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0 || len + (size_t)n >= sizeof r->buf.bytes - 1) {
            len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    return rtk_parse_proc_net_dev((const char *)r->buf.bytes, len, out, cap, resolve_cached, r);
}

static int open_procfs(rtk_reader *r)
{
    int fd = open("/proc/net/dev", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    r->fd = fd;
    r->source = RTK_SRC_PROCFS;
    return 0;
}

int rtk_reader_open(rtk_reader *r, int flags)
{
    r->fd = -1;
    r->seq = 0;
    r->nnames = 0;
    r->names_stale = 1;
    int mon = nl_socket(RTMGRP_LINK);
    r->mon_fd = mon >= 0 ? mon : -1;
    if (!(flags & RTK_FORCE_PROCFS)) {
        int fd = nl_socket(0);
        if (fd >= 0) {
            r->fd = fd;
            r->source = RTK_SRC_NETLINK;
            /* Probe once: kernels before 4.7 answer RTM_GETSTATS with EOPNOTSUPP/EINVAL. */
            int rc = stats_request(r);
            if (rc == 0 && nl_dump(r, NULL, NULL) >= 0)
                return 0;
            close(fd);
            r->fd = -1;
        }
    }
    int rc = open_procfs(r);
    if (rc < 0) {
        rtk_reader_close(r);
        return rc;
    }
    return 0;
}

void rtk_reader_close(rtk_reader *r)
{
    if (r->fd >= 0)
        close(r->fd);
    if (r->mon_fd >= 0)
        close(r->mon_fd);
    r->fd = r->mon_fd = -1;
}

int rtk_reader_read(rtk_reader *r, rtk_link *out, int cap)
{
    return r->source == RTK_SRC_NETLINK ? read_netlink(r, out, cap) : read_procfs(r, out, cap);
}

int rtk_parse_stats_dump(const void *buf, size_t len, rtk_link *out, int cap)
{
    struct stats_ctx ctx = {out, cap, 0, 0};
    int rc = nl_walk(NULL, buf, len, 0, visit_stats, &ctx);
    return rc < 0 ? rc : ctx.n;
}

long rtk_reader_raw_dump(rtk_reader *r)
{
    if (r->source != RTK_SRC_NETLINK)
        return -EOPNOTSUPP;
    int rc = stats_request(r);
    return rc < 0 ? rc : nl_dump(r, NULL, NULL);
}
