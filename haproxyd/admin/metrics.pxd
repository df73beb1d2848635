# Cython declarations for metrics.py (compiled when Cython is present; see setup.py):
# `observe` runs once per request and reads the exchange's fields as C struct fields.
cimport cython

from haproxyd.proxy.client cimport Exchange

cdef class Series:
    cdef public dict codes
    cdef public list buckets
    cdef public double sum
    cdef public long long count
    cdef public long long backend_5xx

cdef class RequestStats:
    cdef public object _clock
    cdef public dict series
    cdef public dict _by_object

    @cython.locals(series=Series, codes=dict, status=int, start=double, elapsed=double)
    cpdef observe(self, Exchange exchange)
    cpdef Series _series_of(self, Exchange exchange)
