# Cython declarations for stats.py (compiled when Cython is present; see setup.py):
# `observe` runs once per request and reads the exchange's fields as C struct fields.
cimport cython

from haproxyd.proxy.exchange cimport Exchange

cdef class Series:
    cdef public dict codes
    cdef public dict codes_h2
    cdef public list buckets
    cdef public double sum
    cdef public long long count
    cdef public long long backend_5xx
    cdef public list exemplars

cdef class RequestStats:
    cdef public object _clock
    cdef public dict series
    cdef public dict _by_object
    cdef tuple _bounds

    @cython.locals(
        series=Series, codes=dict, status=int, start=double, elapsed=double,
        bounds=tuple, n=Py_ssize_t, i=Py_ssize_t, bound=double, trace=tuple,
    )
    cpdef observe(self, Exchange exchange)
    cpdef Series _series_of(self, Exchange exchange)
