# Cython declarations for clientside.py (compiled when Cython is present; see setup.py):
# the exchange calls a client protocol through these cpdef methods, C calls through the
# extension type's method table whichever protocol derives from ClientSide.
cimport cython

from haproxyd.proxy.exchange cimport Exchange
from haproxyd.proxy.request cimport ProxyRuntimeBase

cdef class ClientSide:
    cdef public ProxyRuntimeBase runtime
    cdef public object clock
    cdef public bint closed
    cdef public object peer_ip

    @cython.locals(built=object)
    cpdef send_head(self, Exchange exchange, int status, list parts, list specials)
    @cython.locals(out=list)
    cpdef send_end(self, Exchange exchange, list trailers)
    cpdef send_error(self, Exchange exchange, int status, str reason)
    cpdef send_continue(self)
    cpdef write(self, bytes data)
    cpdef writelines(self, list data)
    cpdef pause_reading_for(self, int reason)
    cpdef resume_reading_for(self, int reason)
    cpdef touch(self)
    cpdef set_deadline(self, int kind)
    cpdef set_deadline_at(self, int kind, double deadline)
    cpdef exchange_done(self, Exchange exchange)
