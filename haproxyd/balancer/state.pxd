# Cython declarations for state.py (compiled when Cython is present; see setup.py).
# The counters the data plane writes on every request are C fields, and the pool's
# per-request calls are C calls from the compiled client and balancers.
cimport cython


cdef double EWMA_ALPHA


@cython.final
cdef class Backend:
    cdef public object id
    cdef public object host
    cdef public long port
    cdef public object address
    # A Python int, not a C one: read only on rebuilds, and a C field would truncate
    # a stray 1.5 to 1 where the interpreted form keeps 1.5.
    cdef public object weight
    cdef public long long effective_weight
    cdef public object role
    cdef public object region
    cdef public object group
    cdef public long long priority
    cdef public long long max_connections
    cdef public object state
    cdef public double state_since
    cdef public object pool_name
    cdef public long long active
    cdef public long long requests
    cdef public long long failures
    cdef public long long selections
    cdef public double ewma

    cpdef bint at_capacity(self)


@cython.final
cdef class Pool:
    cdef dict __dict__  # as the interpreted class: callers may hang their own state on it
    cdef object __weakref__  # the health scheduler keeps the pools it listens to weakly
    cdef public object name
    # A Balancer, typed where it is called (client.pxd): a cimport of base here would
    # make the two modules' imports circular (base imports this one).
    cdef public object balancer
    cdef public dict backends
    cdef public object selectable  # a tuple, or a PanicSet (a tuple subclass)
    cdef public object retry_fallback
    cdef public long long version
    cdef object _balancer_on_start
    cdef object _balancer_on_finish
    cdef object _active_filter
    cdef list _listeners

    cpdef object select(self, object ctx)
    cpdef on_start(self, Backend backend)
    cpdef on_finish(self, Backend backend, double elapsed, bint ok)
