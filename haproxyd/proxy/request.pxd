# Cython declarations for request.py (compiled when Cython is present; see setup.py).
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

cdef class RequestIds:
    cdef readonly bytes prefix
    cdef long long _counter
    cdef bytes _high

    cpdef bytes next(self)

cpdef request_basics(Exchange exchange, ProxyRuntimeBase runtime, bytes method, bint keep_alive)
cpdef plain_request(
    Exchange exchange, ProxyRuntimeBase runtime, bytes method, bint keep_alive, bytes host,
    bytes forwarded
)
cpdef special_request(
    Exchange exchange, ProxyRuntimeBase runtime, bytes method, bytes url, bint upgrade,
    bytes client_ip, bytes proto
)
