# Cython declarations for client.py (compiled when Cython is present; see setup.py).
cimport cython

from haproxyd.balancer.base cimport Balancer
from haproxyd.balancer.state cimport Backend, Pool
from haproxyd.proxy.canonical_head cimport scan_request_head
from haproxyd.proxy.upstream cimport PoolRuntime, UpstreamConnection, UpstreamPool

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
    cdef public PoolRuntime only_pool
    cdef public RequestIds request_ids
    cdef public list exchange_listeners

cdef class RequestIds:
    cdef readonly bytes prefix
    cdef long long _counter
    cdef bytes _high

    cpdef bytes next(self)

cdef class Exchange:
    cdef public int attempts
    cdef public Backend backend
    cdef public list body_buffer
    cdef public long long body_bytes
    cdef public long long bytes_out
    cdef public bint chunked_in
    cdef public bint chunked_out
    cdef public ClientProtocol client
    cdef public object client_ip
    cdef public bint close_after
    cdef public UpstreamConnection conn
    cdef public double connect_time
    cdef public bint continue_sent
    cdef public bint counted
    cdef public bint dispatched
    cdef public double ended
    cdef public bint expect_continue
    cdef public bytes head
    cdef public double header_time
    cdef public bint http10
    cdef public bint is_head
    cdef public bint keep_alive
    cdef public Py_ssize_t kept_end
    cdef public bytes method
    cdef public list out
    cdef public list parts
    cdef public PoolRuntime pool
    cdef public bint queued
    cdef public bint read_to_close
    cdef public bint ready
    cdef public list replay
    cdef public long long replay_bytes
    cdef public bint request_complete
    cdef public bytes request_id
    cdef public bint response_started
    cdef public bint retrying
    cdef public bint reused
    cdef public list tried
    cdef public list specials
    cdef public double start
    cdef public int status
    cdef public object termination
    cdef public list trailers
    cdef public bint upgrade
    cdef public UpstreamPool upstream
    cdef public bint upstream_paused
    cdef public bytes url

    @cython.locals(state=Pool, balancer=Balancer)
    cpdef dispatch(self)
    @cython.locals(state=Pool, upstream=UpstreamPool, conn=UpstreamConnection)
    cpdef _use(self, Backend backend)
    cpdef _attach(self, UpstreamConnection conn)
    cpdef on_request_body(self, bytes body)
    cpdef on_request_complete(self)
    cpdef on_response_head(self, int status, list parts, list specials)
    cpdef flush(self)
    cpdef complete(self, UpstreamConnection conn, bint keep_alive, list trailers)
    @cython.locals(state=Pool, backend=Backend)
    cpdef _finish_backend(self, bint ok)

cdef class ClientProtocol:
    cdef public ProxyRuntimeBase runtime
    cdef public object clock
    cdef public bytes proto
    cdef public object transport
    cdef public object parser
    cdef public object peer_ip
    cdef public bytes peer_ip_bytes
    cdef public bytes _forwarded
    cdef public bint closed
    cdef public object queue
    cdef public Exchange current
    cdef public double deadline
    cdef public int timeout_kind
    cdef public int _paused
    cdef public Py_ssize_t _header_bytes
    cdef public Py_ssize_t _head_raw
    cdef public list _held
    cdef public object _rejection
    cdef public bint _discarding
    cdef public bytes _method
    cdef public bint _fed_at_start
    cdef public long long _begun
    cdef public object _tunnel
    cdef public bint _eof
    cdef public bint _parsing
    cdef public long long requests

    cpdef pause_reading_for(self, int reason)
    cpdef resume_reading_for(self, int reason)
    cpdef touch(self)
    cpdef set_deadline(self, int kind)
    @cython.locals(head=Exchange)
    cpdef _dispatch_head(self)
    cpdef _report(self, Exchange exchange)
    @cython.locals(ended=double)
    cpdef exchange_done(self, Exchange exchange)
    cpdef bytes _scan_requests(self, bytes data)
    cpdef _request_basics(self, Exchange exchange, bytes method, bint keep_alive)
    cpdef _plain_request(self, Exchange exchange, bytes method, bint keep_alive, bytes host)
    cpdef _queue_ready(self, Exchange exchange)
