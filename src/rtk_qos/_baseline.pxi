# Binding of native/baseline.c (included by _core.pyx).
cdef extern from "baseline.h" nogil:
    ctypedef struct rtk_robust:
        double center, scale
        uint32_t n
    rtk_robust rtk_robust_fit(const double *v, uint32_t n, double min_scale, double *scratch)
    double rtk_tod_fit(const double *v, uint32_t n, int64_t first, int64_t step, uint32_t bins,
                       uint32_t min_points, double min_scale, double *scratch, uint32_t *order,
                       rtk_robust *fit)
    void rtk_tod_z(const double *v, uint32_t n, int64_t first, int64_t step, uint32_t bins,
                   const rtk_robust *fit, int by_bin, double *z)


cdef class TimeOfDayBaseline:
    """Median and robust scale of a per-bucket series (NaN = missing), overall and per
    time-of-day bin (native/baseline.c). Value i is bucket first + i, step seconds long.
    min_scale, in the values' unit, is the smallest deviation that counts as one standard
    deviation (a flat baseline would otherwise make any change extreme)."""
    cdef rtk_robust *fit
    cdef readonly uint32_t bins
    cdef readonly int64_t step
    cdef readonly double days

    def __cinit__(self, values, int64_t first, int64_t step, double min_scale, uint32_t bins=48,
                  uint32_t min_points=20):
        cdef array v = array("d", values)
        cdef uint32_t n = len(v)
        if step <= 0 or bins == 0:
            raise ValueError("step and bins must be positive")
        if not min_scale > 0 or min_scale == float("inf"):
            raise ValueError(f"min_scale must be a positive finite number, not {min_scale}")
        self.bins, self.step = bins, step
        self.fit = <rtk_robust *>PyMem_Malloc((bins + 1) * sizeof(rtk_robust))
        cdef double *scratch = <double *>PyMem_Malloc(max(n, 1) * sizeof(double))
        cdef uint32_t *order = <uint32_t *>PyMem_Malloc(max(n, 1) * sizeof(uint32_t))
        try:
            if self.fit == NULL or scratch == NULL or order == NULL:
                raise MemoryError()
            with nogil:
                self.days = rtk_tod_fit(v.data.as_doubles, n, first, step, bins, min_points, min_scale,
                                        scratch, order, self.fit)
        finally:
            PyMem_Free(scratch)
            PyMem_Free(order)

    def __dealloc__(self):
        PyMem_Free(self.fit)

    @property
    def overall(self):
        """(median, scale, values) over the whole series."""
        return self.fit[self.bins].center, self.fit[self.bins].scale, self.fit[self.bins].n

    def at(self, int64_t bucket, bint by_bin=True):
        """(median, scale) for a bucket: its time-of-day bin's, or the overall one."""
        cdef int64_t second = (bucket * self.step) % 86400
        cdef uint32_t b = <uint32_t>((second + 86400) % 86400 * self.bins // 86400) if by_bin else self.bins
        return self.fit[b].center, self.fit[b].scale

    def z(self, values, int64_t first, bint by_bin=True):
        """z of each value (bucket first + i) against its bin, or the overall fit; NaN stays NaN."""
        cdef array v = array("d", values)
        cdef uint32_t n = len(v)
        cdef array out = clone(_DOUBLES, n, False)
        with nogil:
            rtk_tod_z(v.data.as_doubles, n, first, self.step, self.bins, self.fit, by_bin,
                      out.data.as_doubles)
        return out
