# Cython declarations for client.py (compiled when Cython is present; see setup.py).
cimport cython

from haproxyd.proxy.canonical_head cimport scan_request_head
from haproxyd.proxy.clientside cimport ClientSide
from haproxyd.proxy.exchange cimport Exchange
from haproxyd.proxy.request cimport (
    ProxyRuntimeBase, plain_request, request_basics, special_request,
)

cdef class ClientProtocol(ClientSide):
    cdef public bytes proto
    cdef public object transport
    cdef public object parser
    cdef public bytes peer_ip_bytes
    cdef public bytes _forwarded
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
    cdef public bint _http2
    cdef public bytes _preface

    # ClientSide's methods, implemented here.
    cpdef write(self, bytes data)
    cpdef writelines(self, list data)
    cpdef pause_reading_for(self, int reason)
    cpdef resume_reading_for(self, int reason)
    cpdef touch(self)
    cpdef set_deadline(self, int kind)
    cpdef set_deadline_at(self, int kind, double deadline)
    @cython.locals(ended=double)
    cpdef exchange_done(self, Exchange exchange)

    @cython.locals(head=Exchange)
    cpdef _dispatch_head(self)
    cpdef _report(self, Exchange exchange)
    cpdef bytes _scan_requests(self, bytes data)
    cpdef _queue_ready(self, Exchange exchange)
