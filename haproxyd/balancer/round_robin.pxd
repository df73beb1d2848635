# Cython declarations for round_robin.py (compiled when Cython is present; see setup.py).
cimport cython

from haproxyd.balancer.base cimport Balancer
from haproxyd.balancer.state cimport Backend


cdef class RoundRobin(Balancer):
    cdef object _ramp
    cdef Py_ssize_t _next

    @cython.locals(backends=tuple, n=Py_ssize_t, i=Py_ssize_t, backend=Backend)
    cpdef object select(self, object ctx)
