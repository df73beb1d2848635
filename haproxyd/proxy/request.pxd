# Cython declarations for request.py (compiled when Cython is present; see setup.py).
cimport cython

from haproxyd.proxy.exchange cimport Exchange
from haproxyd.proxy.upstream cimport ProxyPool

cdef class ProxyRuntimeBase:
    cdef public object loop
    cdef public Py_ssize_t max_header_bytes
    cdef public long long max_body_bytes
    cdef public double connect_timeout
    cdef public double header_timeout
    cdef public double response_timeout
    cdef public double idle_timeout
    cdef public set connections
    cdef public long long connection_limit
    cdef public bint draining
    cdef public bint shedding
    cdef public object passive_report
    cdef public ProxyPool only_pool
    cdef public RequestIds request_ids
    cdef public list exchange_listeners
    cdef public TraceIds tracing  # None: tracing off
    cdef public bint echo_trace_id  # tracing on, and its ids echoed as X-Trace-ID

cdef class TraceIds:
    cdef Py_ssize_t _at
    cdef Py_ssize_t _block
    cdef bytes _hex
    cdef object _random
    cdef bytes _raw
    cdef Py_ssize_t _size
    cdef Py_ssize_t _step
    cdef long _threshold
    cdef public object sink

    @cython.locals(at=Py_ssize_t)  # (inferred, an int object: boxed at each step)
    cdef Py_ssize_t _draw(self)
    # C locals: inferred, `at` and the slices would be Python objects (ints boxed for
    # every index), several times the cost of the whole line.
    # `text` and `noise`: C pointers into `hexed` and `raw`, which hold the bytes.
    @cython.locals(
        at=Py_ssize_t, hexed=bytes, raw=bytes, span=bytes, trace=bytes,
        text=cython.p_char, noise=cython.p_uchar,
    )
    cpdef bytes ids(self, Exchange exchange, bytes traceparent)
    @cython.locals(trace=tuple)
    cpdef ended(self, Exchange exchange)
    @cython.locals(trace=tuple)
    cpdef bytes line(self, Exchange exchange, bytes traceparent)

cdef class RequestIds:
    cdef readonly bytes prefix
    cdef long long _counter
    cdef bytes _high

    cpdef bytes next(self)

cpdef request_basics(Exchange exchange, ProxyRuntimeBase runtime, bytes method, bint keep_alive)
@cython.locals(trace=tuple)
cpdef plain_request(
    Exchange exchange, ProxyRuntimeBase runtime, bytes method, bint keep_alive, bytes host,
    bytes forwarded
)
cpdef special_request(
    Exchange exchange, ProxyRuntimeBase runtime, bytes method, bytes url, bint upgrade,
    bytes client_ip, bytes proto
)
