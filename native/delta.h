/* Counter deltas that survive real routers.
 *
 * A counter that went down since the last read either wrapped (a driver that
 * still keeps 32-bit counters) or was reset (device re-created, driver reload,
 * stats cleared). Rule, per counter: a decrease is a 32-bit wrap when both
 * readings fit in 32 bits and the wrapped distance is at most 2^31 (half the
 * counter range: at 1 Gbit/s a byte counter needs 17 s to move that far);
 * otherwise it is a reset, and the delta is the new reading (traffic since the
 * reset). Per link: counters reset together, so when any counter of a link
 * reads as a reset, every counter of that link that went down is a reset too
 * (a byte counter alone can look like a plausible wrap after a reset). */
#ifndef RTK_DELTA_H
#define RTK_DELTA_H

#include <stdint.h>

#include "counters.h"

enum rtk_delta_kind { RTK_DELTA_OK = 0, RTK_DELTA_WRAP32 = 1, RTK_DELTA_RESET = 2 };

uint64_t rtk_counter_delta(uint64_t prev, uint64_t cur, int *kind);

/* Deltas of every counter of one link; returns RTK_DELTA_RESET if the link
   reset, else RTK_DELTA_WRAP32 if any counter wrapped, else RTK_DELTA_OK. */
int rtk_link_deltas(const uint64_t prev[RTK_NCOUNTERS], const uint64_t cur[RTK_NCOUNTERS],
                    uint64_t out[RTK_NCOUNTERS]);

#endif
