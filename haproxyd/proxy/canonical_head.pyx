# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""A scanner for the message heads that need no parser: canonical ones.

Most responses from a backend look alike: `HTTP/1.1 200 OK`, a handful of `Name: value`
lines, framed by one Content-Length, the whole head in one read. For those, going
through llhttp costs a Python callback per header and per event (about a fifth of a
proxied request's instructions). `scan_response_head` reads such a head in one C pass
and returns what `UpstreamConnection` needs to forward it; for anything else it returns
None and llhttp reads the response from its first byte, as if the scanner had not
looked. So the scanner may be as strict as it likes, and it is: it accepts only a
subset of what llhttp accepts (tests/proxy/test_canonical_head.py checks both agree on
it), and every doubtful byte sends the response to llhttp.

Accepted: `HTTP/1.1 SSS reason CRLF` with a status of 200-599 but 204 and 304; header
lines `token ": " value CRLF` (one space after the colon, none after the value; value
bytes HTAB, SP, VCHAR, obs-text); exactly one Content-Length of 1-15 digits; Connection
only as `close` or `keep-alive`; no Transfer-Encoding, no Upgrade; at most 64 header
lines; the head ends in this read, and the read holds no byte past the body's end.

`scan_request_head` does the same for a client's request: an origin-form GET (or other
bodiless request) whose only headers the proxy acts on are Host and a plain Connection.
Requests are where smuggling lives, so its subset is narrower still: method one of GET,
HEAD, POST, PUT, DELETE, OPTIONS, PATCH; target `/` and RFC 3986 path and query bytes
only; exactly `HTTP/1.1`; ASCII header values; exactly one Host, a plain name with an
optional port (target.host_ok's rule, narrowed); at most one Connection, exactly `close`
or `keep-alive` (a client that opens a connection per request says `close`: without it
here, each such request went through llhttp and the special-header path, about a fifth
of a new connection's cost); no Content-Length, Transfer-Encoding, Expect, Upgrade,
X-Forwarded-For, Via or X-Request-ID (any of those, or anything unusual, and llhttp
reads the request, with all its checks).

This module exists only compiled (setup.py builds it when it builds the data plane);
the compiled client and upstream call its scanners as C functions (canonical_head.pxd).
Interpreted, they have llhttp read every request and response.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy

cdef enum:
    MAX_LINES = 64

# Byte classes (RFC 9110 §5.6.2 tchar; §5.5 field-value bytes, which are also those of
# a reason phrase).
cdef unsigned char TCHAR[256]
cdef unsigned char VALUE[256]
cdef unsigned char ASCII_VALUE[256]  # VALUE without obs-text: what a request may carry
cdef unsigned char TARGET[256]  # RFC 3986 pchar, "/" and "?" (no "#", no space)
cdef unsigned char HOST_NAME[256]  # RFC 3986 unreserved and sub-delims: a plain reg-name


cdef void _fill_tables():
    cdef int c
    for c in range(256):
        TCHAR[c] = (
            (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
            or c in b"!#$%&'*+-.^_`|~"
        )
        VALUE[c] = c == 9 or 32 <= c <= 126 or c >= 128
        ASCII_VALUE[c] = c == 9 or 32 <= c <= 126
        TARGET[c] = (
            (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
            or c in b"-._~!$&'()*+,;=:@/?%"
        )
        HOST_NAME[c] = (
            (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
            or c in b"-._~!$&'()*+,;="
        )


_fill_tables()


cdef inline bint _named(const unsigned char* p, Py_ssize_t n, const char* lower, Py_ssize_t size):
    """Whether the `n` bytes at `p` are `lower` in any case (`lower` is `size` bytes)."""
    cdef Py_ssize_t k
    if n != size:
        return False
    for k in range(n):
        if (p[k] | 0x20) != <unsigned char>lower[k]:
            return False
    return True


# `_request_kind` and `_response_kind`: what headers.py does with a header name (its
# KIND_* values), and KIND_LLHTTP_OWN for a name llhttp acts on; generated at build time.
include "canonical_head_kinds.pxi"


cdef inline bint _plain_host(const unsigned char* p, Py_ssize_t i, Py_ssize_t end):
    """Whether `p[i:end]` is a reg-name of plain characters with an optional port of
    1-5 digits up to 65535: a Host value target.host_ok accepts, checked here without
    a Python object (anything else, IP literals and percent-encodings included, is
    llhttp's case, where host_ok decides)."""
    cdef Py_ssize_t start = i
    cdef long port = 0
    while i < end and HOST_NAME[p[i]]:
        i += 1
    if i == start:
        return False
    if i == end:
        return True
    if p[i] != 58 or end - i - 1 < 1 or end - i - 1 > 5:  # ":" and 1-5 digits
        return False
    i += 1
    while i < end:
        if not 48 <= p[i] <= 57:
            return False
        port = port * 10 + (p[i] - 48)
        i += 1
    return port <= 65535


cdef struct Kept:
    # The header lines a head forwards as they are, as byte ranges of the data
    # (adjacent lines merged into one range), and the lines read so far.
    int lines
    int ranges
    Py_ssize_t total
    Py_ssize_t starts[MAX_LINES]
    Py_ssize_t ends[MAX_LINES]


cdef inline void _keep(Kept* kept, Py_ssize_t start, Py_ssize_t end):
    if kept.ranges and kept.ends[kept.ranges - 1] == start:
        kept.ends[kept.ranges - 1] = end  # adjacent to the kept line before: one copy
    else:
        kept.starts[kept.ranges] = start
        kept.ends[kept.ranges] = end
        kept.ranges += 1
    kept.total += end - start


cdef inline bytes _slice(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    # `data[start:end]` as one copy: Cython slices bytes through PySequence_GetSlice,
    # which builds two ints and a slice object first (about three times the cost).
    return PyBytes_FromStringAndSize(<const char*>p + start, end - start)


cdef bytes _joined(const unsigned char* p, Kept* kept):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, kept.total)
    cdef char* at = PyBytes_AS_STRING(out)
    cdef int r
    for r in range(kept.ranges):
        memcpy(at, p + kept.starts[r], kept.ends[r] - kept.starts[r])
        at += kept.ends[r] - kept.starts[r]
    return out


cdef enum:
    HEAD_END = -2  # `_field` found the empty line that ends the head
    NOT_CANONICAL = -1


cdef inline Py_ssize_t _field(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, const unsigned char* values,
    Kept* kept, Py_ssize_t* value_start,
):
    """Reads the line at `i`: HEAD_END for the head's empty line; NOT_CANONICAL for
    anything else than `token ": " value CRLF` (value bytes of class `values`, no
    whitespace around it), or a line past MAX_LINES, or a line that goes on past `n`;
    else the index of the line's CR, with the name at `i` and the value at
    `value_start`."""
    cdef Py_ssize_t start = i
    if i + 1 >= n:
        return NOT_CANONICAL  # the head goes on past this read
    if p[i] == 13:
        return HEAD_END if p[i + 1] == 10 else NOT_CANONICAL
    kept.lines += 1
    if kept.lines > MAX_LINES:
        return NOT_CANONICAL
    while i < n and TCHAR[p[i]]:
        i += 1
    if i == start or i + 1 >= n or p[i] != 58 or p[i + 1] != 32:
        return NOT_CANONICAL  # also an obs-fold line, which starts with SP or HTAB
    i += 2
    value_start[0] = i
    while i < n and values[p[i]]:
        i += 1
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return NOT_CANONICAL
    if i > value_start[0] and (p[value_start[0]] == 32 or p[value_start[0]] == 9
                               or p[i - 1] == 32 or p[i - 1] == 9):
        return NOT_CANONICAL  # whitespace around the value: llhttp trims it
    return i


cpdef tuple scan_response_head(bytes data):
    """(head_end, status, status_line, kept, length, length_value, keep_alive, body) for
    a canonical response head at the start of `data`, else None.

    `status_line` is the first line, CRLF included (as the client gets it); `kept` is
    the head's header lines that are forwarded as they are (all but Content-Length,
    Connection and the hop-by-hop ones), in order, joined; `length` is the
    Content-Length and `length_value` its bytes; `keep_alive` False when the backend
    said `Connection: close`; `body` the bytes of the body in `data` (all of it or its
    start, never more)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, name_start, value_start = 0, reason_end, r
    cdef Py_ssize_t head_end
    cdef Py_ssize_t length_start = 0, length_end = 0
    cdef long long length = -1
    cdef int status
    cdef bint keep_alive = True
    cdef Kept kept
    cdef int kind  # a KIND_* value
    kept.lines = kept.ranges = kept.total = 0

    if n < 19 or memcmp(p, b"HTTP/1.1 ", 9) != 0:
        return None
    if not (48 <= p[9] <= 57 and 48 <= p[10] <= 57 and 48 <= p[11] <= 57) or p[12] != 32:
        return None
    status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    if status < 200 or status > 599 or status == 204 or status == 304:
        return None
    i = 13
    while i < n and VALUE[p[i]]:
        i += 1
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return None
    reason_end = i
    i += 2
    while True:
        name_start = i
        i = _field(p, n, i, VALUE, &kept, &value_start)
        if i == HEAD_END:
            head_end = name_start + 2
            break
        if i == NOT_CANONICAL:
            return None
        kind = _response_kind(p + name_start, value_start - 2 - name_start)
        if kind == KIND_CONTENT_LENGTH:
            if length >= 0 or i == value_start or i - value_start > 15:
                return None
            length = 0
            for r in range(value_start, i):
                if not 48 <= p[r] <= 57:
                    return None
                length = length * 10 + (p[r] - 48)
            length_start = value_start
            length_end = i
        elif kind == KIND_CONNECTION:
            if _named(p + value_start, i - value_start, b"close", 5):
                keep_alive = False
            elif not _named(p + value_start, i - value_start, b"keep-alive", 10):
                return None  # Connection names headers, or upgrade: llhttp's case
        elif kind != KIND_KEEP and kind != KIND_DROP:
            return None  # Transfer-Encoding, Upgrade, ...: llhttp's case
        i += 2
        if kind == KIND_KEEP:
            _keep(&kept, name_start, i)
    if length < 0 or n - head_end > length:
        return None
    return (
        head_end,
        status,
        _slice(p, 0, reason_end + 2),
        _joined(p, &kept),
        length,
        _slice(p, length_start, length_end),
        keep_alive,
        _slice(p, head_end, n),
    )


# The methods `scan_request_head` accepts, returned as these objects (no copy per
# request, and their hashes are cached).
_GET = b"GET"
_HEAD = b"HEAD"
_POST = b"POST"
_PUT = b"PUT"
_DELETE = b"DELETE"
_OPTIONS = b"OPTIONS"
_PATCH = b"PATCH"


cdef object _method(const unsigned char* p, Py_ssize_t n):
    """The method at `p` if it is one of the accepted ones followed by SP, else None."""
    if n >= 4 and memcmp(p, b"GET ", 4) == 0:
        return _GET
    if n >= 5 and memcmp(p, b"HEAD ", 5) == 0:
        return _HEAD
    if n >= 5 and memcmp(p, b"POST ", 5) == 0:
        return _POST
    if n >= 4 and memcmp(p, b"PUT ", 4) == 0:
        return _PUT
    if n >= 7 and memcmp(p, b"DELETE ", 7) == 0:
        return _DELETE
    if n >= 8 and memcmp(p, b"OPTIONS ", 8) == 0:
        return _OPTIONS
    if n >= 6 and memcmp(p, b"PATCH ", 6) == 0:
        return _PATCH
    return None


cpdef tuple scan_request_head(bytes data, Py_ssize_t start, Py_ssize_t limit):
    """(head_end, method, target, line, host, kept, keep_alive) for a canonical request
    head at `data[start:]` no longer than `limit` bytes, else None.

    `line` is the request line with its CRLF, which in a canonical head is exactly the
    line the proxy sends on (`method SP target SP HTTP/1.1`). `kept` is the header
    lines forwarded as they are (all but the hop-by-hop ones and the X-Forwarded-Proto
    and -Host the proxy sets itself; Host included), in order, joined; `host` is the
    Host value; `keep_alive` False when the client said `Connection: close`."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, name_start, value_start = 0, target_start, target_end
    cdef Py_ssize_t head_end
    cdef Py_ssize_t host_start = -1, host_end = 0
    cdef Kept kept
    cdef int kind  # a KIND_* value
    cdef int connection = -1  # -1: no Connection header; else whether it said keep-alive
    kept.lines = kept.ranges = kept.total = 0

    if start < 0 or start >= n:
        return None
    if n - start > limit:
        n = start + limit  # a head that does not end within the limit is llhttp's (431)
    method = _method(p + start, n - start)
    if method is None:
        return None
    i = start + len(<bytes>method) + 1
    target_start = i
    if i >= n or p[i] != 47:  # "/"
        return None
    while i < n and TARGET[p[i]]:
        i += 1
    target_end = i
    if n - i < 11 or memcmp(p + i, b" HTTP/1.1\r\n", 11) != 0:
        return None
    i += 11
    while True:
        name_start = i
        i = _field(p, n, i, ASCII_VALUE, &kept, &value_start)
        if i == HEAD_END:
            head_end = name_start + 2
            break
        if i == NOT_CANONICAL:
            return None  # (or the head goes on past this read, or past the limit)
        kind = _request_kind(p + name_start, value_start - 2 - name_start)
        if kind == KIND_HOST:
            if host_start >= 0 or not _plain_host(p, value_start, i):
                return None  # a second Host, an empty or unusual one
            host_start = value_start
            host_end = i
        elif kind == KIND_CONNECTION:
            if connection >= 0:
                return None  # a second Connection line: llhttp joins them
            if _named(p + value_start, i - value_start, b"close", 5):
                connection = 0
            elif _named(p + value_start, i - value_start, b"keep-alive", 10):
                connection = 1
            else:
                return None  # Connection names headers, or upgrade: llhttp's case
        elif kind != KIND_KEEP and kind != KIND_DROP:
            return None  # framing, Expect, forwarding headers: llhttp's case
        i += 2
        if kind == KIND_KEEP or kind == KIND_HOST:  # Host goes on as received
            _keep(&kept, name_start, i)
    if host_start < 0:
        return None
    return (
        head_end,
        method,
        _slice(p, target_start, target_end),
        _slice(p, start, target_end + 11),
        _slice(p, host_start, host_end),
        _joined(p, &kept),
        connection != 0,
    )
