# The scanners as C functions, for the compiled client and upstream (which cimport
# them); Python callers (the tests) call them as usual.

cpdef tuple scan_response_head(bytes data)
cpdef tuple scan_request_head(bytes data, Py_ssize_t start, Py_ssize_t limit)
