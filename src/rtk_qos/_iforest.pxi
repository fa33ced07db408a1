# Binding of native/iforest.c (included by _core.pyx).
cdef extern from "iforest.h" nogil:
    enum:
        RTK_IFOREST_MAX_SAMPLE_SIZE
        RTK_IFOREST_MAX_FEATURES
        RTK_IFOREST_ESHAPE
        RTK_IFOREST_ENONFINITE
        RTK_IFOREST_EUNFITTED
    ctypedef struct rtk_iforest:
        uint32_t n_trees, sample_size, n_features, psi, height_limit
    size_t rtk_iforest_arena_size(uint32_t n_trees, uint32_t sample_size, uint32_t n_features)
    int rtk_iforest_init(rtk_iforest *f, void *arena, uint32_t n_trees, uint32_t sample_size,
                         uint32_t n_features, uint64_t seed)
    int rtk_iforest_fit(rtk_iforest *f, const double *X, uint32_t n_rows, uint32_t n_features)
    int rtk_iforest_score(const rtk_iforest *f, const double *X, uint32_t n_rows, double *out)
    int rtk_iforest_threshold(double *scores, uint32_t n, double contamination, double *out)

from cpython.mem cimport PyMem_Realloc
from libc.stdint cimport UINT32_MAX
from libc.string cimport memcpy

import threading

IFOREST_ERRORS = {
    RTK_IFOREST_ESHAPE: "rows do not have the forest's number of features",
    RTK_IFOREST_ENONFINITE: "rows hold a NaN or an infinity",
    RTK_IFOREST_EUNFITTED: "the forest is not fitted: call fit() first",
}


cdef const double[:, ::1] _iforest_rows(rows, n_features) except *:
    """rows as an (n, d) C-contiguous float64 view: a 2-D buffer as it is, or a flat
    one (array('d'), on a router without numpy) cut into rows of n_features."""
    cdef const double[:, ::1] m
    cdef const double[::1] flat
    cdef Py_ssize_t d
    try:
        if n_features is None:
            m = rows
        else:
            flat = rows
    except (TypeError, ValueError) as e:
        raise ValueError("rows must be a C-contiguous float64 buffer of shape (n, d), or a flat one "
                         f"with n_features: {e}") from None
    if n_features is not None:
        d = n_features
        if d < 1:
            raise ValueError(f"n_features must be at least 1, not {d}")
        if len(flat) == 0:
            raise ValueError("rows is empty")
        if len(flat) % d:
            raise ValueError(f"{len(flat)} values do not make rows of n_features={d}")
        # Known to be contiguous float64 by now, so the bytes reshape safely.
        m = memoryview(rows).cast("B").cast("d", (len(flat) // d, d))
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"rows is empty (shape ({m.shape[0]}, {m.shape[1]}))")
    if <uint64_t>m.shape[0] > UINT32_MAX or <uint64_t>m.shape[1] > RTK_IFOREST_MAX_FEATURES:
        raise ValueError(f"rows is too big (shape ({m.shape[0]}, {m.shape[1]}): at most 2^32 - 1 rows "
                         f"of {RTK_IFOREST_MAX_FEATURES} features)")
    return m


cdef class IsolationForest:
    """Isolation Forest (native/iforest.c): scores in (0, 1], higher is more anomalous,
    about 0.5 for ordinary rows (scikit-learn's score_samples is the negative).

    fit(rows) and score(rows) take an (n, d) C-contiguous float64 buffer (a numpy array,
    a memoryview), or a flat array('d') with n_features=d. The same seed and data give
    the same forest on every architecture. Fitting and scoring release the GIL.
    """
    cdef rtk_iforest f
    cdef void *arena
    cdef size_t arena_bytes
    cdef object lock
    cdef readonly uint32_t n_trees, sample_size
    cdef readonly uint64_t seed

    def __cinit__(self, n_trees=100, sample_size=256, seed=0):
        if not (1 <= n_trees <= UINT32_MAX and 1 <= sample_size <= RTK_IFOREST_MAX_SAMPLE_SIZE):
            raise ValueError(f"need n_trees >= 1 and 1 <= sample_size <= 2^24, "
                             f"not {n_trees} and {sample_size}")
        self.n_trees, self.sample_size, self.seed = n_trees, sample_size, seed
        self.lock = threading.Lock()

    def __dealloc__(self):
        PyMem_Free(self.arena)

    @property
    def n_features(self):
        """Features of the rows the forest was fitted on; None before fit()."""
        return self.f.n_features if self.f.psi else None

    @property
    def memory_bytes(self):
        """Bytes of the arena (trees and training scratch); 0 before the first fit()."""
        return self.arena_bytes

    def fit(self, rows, n_features=None):
        """Fits n_trees trees on min(sample_size, n) rows each; returns self."""
        cdef const double[:, ::1] m = _iforest_rows(rows, n_features)
        cdef uint32_t n = m.shape[0], d = m.shape[1]
        cdef size_t need = rtk_iforest_arena_size(self.n_trees, self.sample_size, d)
        cdef void *arena
        cdef int rc
        if need == 0:
            raise ValueError(f"a forest of {self.n_trees} trees of {self.sample_size} rows "
                             f"and {d} features is too big")
        with self.lock:
            if need != self.arena_bytes:
                arena = PyMem_Realloc(self.arena, need)
                if arena == NULL:
                    raise MemoryError()
                self.arena, self.arena_bytes = arena, need
            rtk_iforest_init(&self.f, self.arena, self.n_trees, self.sample_size, d, self.seed)
            with nogil:
                rc = rtk_iforest_fit(&self.f, &m[0, 0], n, d)
            if rc != 0:
                raise ValueError(IFOREST_ERRORS[rc])
        return self

    def score(self, rows, n_features=None):
        """The score of each row, as array('d')."""
        cdef const double[:, ::1] m = _iforest_rows(rows, n_features)
        cdef uint32_t n = m.shape[0], d = m.shape[1]
        cdef array out = clone(_DOUBLES, n, False)
        cdef int rc
        with self.lock:
            if self.f.psi == 0:
                raise ValueError(IFOREST_ERRORS[RTK_IFOREST_EUNFITTED])
            if d != self.f.n_features:
                raise ValueError(f"rows have {d} features, the forest was fitted on {self.f.n_features}")
            with nogil:
                rc = rtk_iforest_score(&self.f, &m[0, 0], n, out.data.as_doubles)
            if rc != 0:
                raise ValueError(IFOREST_ERRORS[rc])
        return out

    @staticmethod
    def threshold(scores, double contamination):
        """The score above which a row is an outlier when a fraction `contamination`
        in (0, 0.5] of the training rows are: the (1 - contamination) quantile of their
        scores, like scikit-learn's offset_ (which is its negative)."""
        cdef const double[::1] s = scores
        cdef array work
        cdef double out
        if len(s) == 0 or len(s) > UINT32_MAX:
            raise ValueError(f"need 1 to 2^32 - 1 scores, not {len(s)}")
        if not 0.0 < contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], not {contamination}")
        work = clone(_DOUBLES, len(s), False)
        memcpy(work.data.as_doubles, &s[0], len(s) * sizeof(double))
        rtk_iforest_threshold(work.data.as_doubles, len(s), contamination, &out)
        return out
