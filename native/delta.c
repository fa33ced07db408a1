#include "delta.h"

#define RTK_U32_MAX 0xffffffffull
#define RTK_WRAP32_MAX (1ull << 31)

uint64_t rtk_counter_delta(uint64_t prev, uint64_t cur, int *kind)
{
    if (cur >= prev) {
        *kind = RTK_DELTA_OK;
        return cur - prev;
    }
    if (prev <= RTK_U32_MAX && cur <= RTK_U32_MAX) {
        uint64_t wrapped = (RTK_U32_MAX + 1 - prev) + cur;
        if (wrapped <= RTK_WRAP32_MAX) {
            *kind = RTK_DELTA_WRAP32;
            return wrapped;
        }
    }
    *kind = RTK_DELTA_RESET;
    return cur;
}

int rtk_link_deltas(const uint64_t prev[RTK_NCOUNTERS], const uint64_t cur[RTK_NCOUNTERS],
                    uint64_t out[RTK_NCOUNTERS])
{
    int worst = RTK_DELTA_OK;
    for (int i = 0; i < RTK_NCOUNTERS; i++) {
        int kind;
        out[i] = rtk_counter_delta(prev[i], cur[i], &kind);
        if (kind > worst)
            worst = kind;
    }
    if (worst == RTK_DELTA_RESET)
        for (int i = 0; i < RTK_NCOUNTERS; i++)
            if (cur[i] < prev[i])
                out[i] = cur[i];
    return worst;
}
