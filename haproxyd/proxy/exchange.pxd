# Cython declarations for exchange.py (compiled when Cython is present; see setup.py).
cimport cython

from haproxyd.balancer.state cimport Backend, Pool
from haproxyd.proxy.clientside cimport ClientSide
from haproxyd.proxy.upstream cimport BackendConnections, ProxyPool, UpstreamConnection

cdef class Exchange:
    cdef public int attempts
    cdef public Backend backend
    cdef public list body_buffer
    cdef public long long body_bytes
    cdef public long long bytes_out
    cdef public bint chunked_in
    cdef public bint chunked_out
    cdef public ClientSide client
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
    cdef public bint http2
    cdef public bint is_head
    cdef public bint keep_alive
    cdef public Py_ssize_t kept_end
    cdef public bytes method
    cdef public list out
    cdef public list parts
    cdef public ProxyPool pool
    cdef public bint queued
    cdef public bint read_to_close
    cdef public bint ready
    cdef public list replay
    cdef public long long replay_bytes
    cdef public bint request_complete
    cdef public bytes request_id
    cdef public tuple trace  # request.TraceIds.line's, or None
    cdef public bint response_started
    cdef public list retry_log
    cdef public bint retrying
    cdef public bint reused
    cdef public list tried
    cdef public list specials
    cdef public double start
    cdef public int status
    cdef public object termination
    cdef public list trailers
    cdef public bint upgrade
    cdef public BackendConnections upstream
    cdef public bint upstream_paused
    cdef public bytes url

    @cython.locals(state=Pool)
    cpdef dispatch(self)
    @cython.locals(state=Pool, upstream=BackendConnections, conn=UpstreamConnection)
    cpdef _use(self, Backend backend)
    cpdef _attach(self, UpstreamConnection conn)
    cpdef on_request_body(self, bytes body)
    cpdef on_request_complete(self)
    cpdef on_head(self, int status, list parts, list specials)
    cpdef on_body(self, bytes body)
    cpdef on_read_end(self)
    cpdef flush(self)
    cpdef on_complete(self, UpstreamConnection conn, bint keep_alive, list trailers)
    cpdef cut_backend(self)
    @cython.locals(state=Pool, backend=Backend)
    cpdef _finish_backend(self, bint ok)
