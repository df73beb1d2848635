"""The start of a request where the proxy decides, not llhttp (issue 18, items 4 and 10).

llhttp refuses a method it does not know (`FROB`, and any extension method), while
RFC 9110 §9.1 makes any token a method and nginx and HAProxy forward them; it reads
`HTTP/1.2` as malformed (400) where RFC 9110 §15.6.6 has 505; and it skips a bare CR
before a request line, which RFC 9112 §2.2 does not allow. The client's parser calls
these helpers only after llhttp failed (or, for a bare CR, when a read starts with CR
or LF), never on the common path.

An extension method is handled by a substitution: the request's bytes are parsed by a
new parser with `PLACEHOLDER` in the method's place (same framing rules: llhttp's only
method-specific ones are for CONNECT and HEAD responses), and the client puts the real
method back when the head is complete.
"""

from __future__ import annotations

import contextlib
import re

import httptools

PLACEHOLDER = b"GET"

_METHOD_SP = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")
_VERSION = re.compile(rb" HTTP/([0-9])\.([0-9])\r\n")


class _Completions:
    """A parser protocol that only counts the requests that end."""

    def __init__(self) -> None:
        self.count = 0

    def on_message_complete(self) -> None:
        self.count += 1


def _completed(data: bytes) -> int:
    counter = _Completions()
    with contextlib.suppress(httptools.HttpParserError):
        httptools.HttpRequestParser(counter).feed_data(data)
    return counter.count


def message_start(data: bytes, completed: int) -> int:
    """Where in `data` (which starts at a request's start) the request after the first
    `completed` ones starts: the shortest prefix a fresh parser ends that many requests
    in, found by bisection (httptools tells no positions). Only after a failure."""
    if completed == 0:
        return 0
    low, high = 1, len(data)
    while low < high:
        middle = (low + high) // 2
        if _completed(data[:middle]) >= completed:
            high = middle
        else:
            low = middle + 1
    return low


def line_start(data: bytes, start: int) -> int:
    """Where the request line at or after `start` begins, past the empty lines (CRLF)
    a server may ignore before it (RFC 9112 §2.2); -1 for a bare CR or LF there."""
    while data.startswith(b"\r\n", start):
        start += 2
    if data[start : start + 1] in (b"\r", b"\n"):
        return -1
    return start


def extension_method(data: bytes, start: int) -> bytes | None:
    """The method token at `start` if the request line begins with one and a space."""
    match = _METHOD_SP.match(data, start)
    return match[0][:-1] if match else None


def unsupported_version(data: bytes) -> bool:
    """Whether `data` holds a well-formed request-line version other than 1.0 and 1.1
    (505 rather than llhttp's 400)."""
    return any(m[1] != b"1" or m[2] not in (b"0", b"1") for m in _VERSION.finditer(data))
