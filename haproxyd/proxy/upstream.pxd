# Cython declarations for upstream.py (compiled when Cython is present; see setup.py).
cimport cython

from haproxyd.balancer.base cimport Balancer
from haproxyd.balancer.state cimport Pool
from haproxyd.proxy.canonical_head cimport scan_response_head
from haproxyd.proxy.exchange cimport Exchange

cdef class UpstreamConnection:
    cdef public BackendConnections owner
    cdef public object transport
    cdef public object parser
    cdef public Exchange exchange
    cdef public double idle_since
    cdef public long long requests
    cdef public bint closed
    cdef public object tunnel
    cdef public list _parts
    cdef public list _specials
    cdef public list _trailers
    cdef public bytes _reason
    cdef public bint _got_bytes
    cdef public long long _body_left
    cdef public bint _keep_alive_after
    cdef public bint _in_message

    cpdef _scanned_response(self, Exchange exchange, tuple head)
    cpdef _scanned_body(self, Exchange exchange, bytes data, long long left)
    cpdef _next_message(self)
    cpdef send(self, Exchange exchange, bytes head)
    cpdef bint keep_alive(self)
    cpdef close(self)

cdef class BackendConnections:
    cdef public object backend
    cdef public long long max_idle
    cdef public double idle_timeout
    cdef public long long max_requests
    cdef public object resolver
    cdef public object idle
    cdef public long long open
    cdef public long long connects
    cdef public long long _next_address

    cpdef release(self, UpstreamConnection conn, double now)

cdef class ProxyPool:
    cdef public object name
    cdef public object config
    cdef public Pool state
    cdef public dict upstreams
    cdef public bytes default_host
    cdef public bint passive
    cdef public long long active
    cdef public long long retries_active
    cdef public object waiters

    @cython.locals(balancer=Balancer)
    cpdef object select(self, Exchange exchange)
    cpdef bint retry_allowed(self)
    cpdef bint enqueue(self, Exchange exchange)
    cpdef wake_waiters(self)
