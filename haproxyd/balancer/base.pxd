# Cython declarations for base.py (compiled when Cython is present; see setup.py).
# `select` is a C call from the compiled client into a compiled algorithm; an algorithm
# written in Python overrides it as usual (Cython dispatches to the override).

cdef class Balancer:
    cdef public dict options
    cdef public object backends

    cpdef object select(self, object ctx)
