"""HTTP/2 limits and the frame guard that enforces the ones `h2` does not.

`Http2Limits` is every bound of a client HTTP/2 connection in one frozen value (the
config section `http2:` will build it). `FrameGuard` reads the 9-byte frame headers of
the client's byte stream *before* `h2` parses them (RFC 9113 §4.1: length, type, flags,
stream id), and says where a bound was crossed, so that the session feeds `h2` only
the bytes before the offending frame and answers with GOAWAY:

- a header block (HEADERS + CONTINUATION) larger than `max_header_block` bytes
  (CVE-2024-27316, "CONTINUATION flood"): `h2` itself buffers up to 64 CONTINUATION
  frames of up to `max_frame_size` each (about 1 MiB a connection) before it refuses;
- more than `max_resets` RST_STREAM frames within `reset_window` seconds
  (CVE-2023-44487, "rapid reset"), where `h2` has no bound at all;
- more than `max_settings` SETTINGS or `max_pings` PING frames (not ACKs) within
  `control_window` seconds (CVE-2019-9512/9515): `h2` answers each with an ACK, so a
  peer that sends them and never reads makes us queue the answers;
- more than `max_noop_frames` frames that ask for no work within `control_window`:
  PRIORITY (CVE-2019-9513; RFC 9113 deprecates the scheme, so it is ignored anyway)
  and DATA with neither payload nor END_STREAM (CVE-2019-9518).

Counting before `h2` matters for the last two: by the time `h2` reports a PING, its ACK
is already queued. The guard costs one `int.from_bytes` and a few comparisons per frame;
it allocates nothing but the few bytes of a frame header split across two reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from h2.errors import ErrorCodes

PREFACE_LEN = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", RFC 9113 §3.4
FRAME_HEADER_LEN = 9

_DATA = 0x0
_HEADERS = 0x1
_PRIORITY = 0x2
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PING = 0x6
_CONTINUATION = 0x9
_FLAG_ACK = 0x1
_FLAG_END_STREAM = 0x1
_FLAG_END_HEADERS = 0x4


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """The bounds of one client HTTP/2 connection; the defaults are nginx's or HAProxy's
    where they have one (docs/http2.md)."""

    # Advertised in SETTINGS; a stream past it is refused with REFUSED_STREAM.
    max_concurrent_streams: int = 100
    # Per-stream receive window we advertise (SETTINGS_INITIAL_WINDOW_SIZE): how much
    # request body a client may send before the consumer has taken any of it.
    initial_window: int = 65535
    max_frame_size: int = 16384  # SETTINGS_MAX_FRAME_SIZE (the protocol's minimum)
    # Decoded header list (names + values + 32 per field, RFC 9113 §6.5.2), enforced by
    # the HPACK decoder: an HPACK bomb stops here.
    max_header_list_size: int = 65536
    # Encoded header block, HEADERS plus its CONTINUATION frames, enforced by FrameGuard.
    max_header_block: int = 65536
    max_resets: int = 100  # RST_STREAM frames a client may send per reset_window
    reset_window: float = 10.0
    max_settings: int = 32  # SETTINGS frames (not ACKs) per control_window
    max_pings: int = 32  # PING frames (not ACKs) per control_window
    # PRIORITY frames and empty DATA frames without END_STREAM, per control_window.
    max_noop_frames: int = 100
    control_window: float = 10.0
    # Streams a connection may open in all (nginx's keepalive_requests); then a graceful
    # GOAWAY. 0: no bound.
    max_requests: int = 1000
    # Response bytes buffered per stream beyond what the client's window takes, before
    # the producer is paused (and resumed below half of it).
    send_buffer: int = 262144
    # A stream whose buffered response makes no progress this long (zero window, or a
    # client that stopped reading) is reset.
    stall_timeout: float = 30.0
    # A connection without streams this long is closed with GOAWAY(NO_ERROR).
    idle_timeout: float = 180.0


class RateWindow:
    """At most `limit` events per `span` seconds, counted in fixed windows (a burst of
    up to twice the limit across a window edge is accepted: cheap, and enough to stop a
    flood, which is orders of magnitude above any limit)."""

    __slots__ = ("count", "limit", "span", "start")

    def __init__(self, limit: int, span: float, now: float) -> None:
        self.limit = limit
        self.span = span
        self.start = now
        self.count = 0

    def hit(self, now: float) -> bool:
        """Count one event; True when it is over the limit."""
        if now - self.start >= self.span:
            self.start = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


class FrameGuard:
    """Reads frame headers ahead of `h2`; `check(data)` returns how many bytes of `data`
    may be fed to `h2` (all of them unless a bound was crossed: then `violation` is
    `(error code, reason)` and the count stops before the offending frame; when that
    frame's header began in an earlier read, those first bytes were fed with it, which
    is harmless: h2 keeps an incomplete frame header and never acts on it).

    One per connection, called from `data_received` only."""

    __slots__ = (
        "_block",
        "_clock",
        "_head",
        "_in_block",
        "_limits",
        "_noops",
        "_pings",
        "_preface",
        "_resets",
        "_settings",
        "_skip",
        "violation",
    )

    def __init__(self, limits: Http2Limits, clock: Callable[[], float]) -> None:
        now = clock()
        self._limits = limits
        self._clock = clock
        self._preface = PREFACE_LEN  # bytes of the client preface still to pass over
        self._skip = 0  # payload bytes of the current frame still to pass over
        self._head = b""  # a frame header split across reads
        self._block = 0  # bytes of the header block in progress
        self._in_block = False
        self._resets = RateWindow(limits.max_resets, limits.reset_window, now)
        self._settings = RateWindow(limits.max_settings, limits.control_window, now)
        self._pings = RateWindow(limits.max_pings, limits.control_window, now)
        self._noops = RateWindow(limits.max_noop_frames, limits.control_window, now)
        self.violation: tuple[ErrorCodes, str] | None = None

    def check(self, data: bytes) -> int:
        if self.violation is not None:
            return 0
        size = len(data)
        pos = 0
        if self._preface:
            step = min(self._preface, size)
            self._preface -= step
            pos = step
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                continue
            head = self._head
            start = pos - len(head)  # where the frame began (< 0: in an earlier read)
            need = FRAME_HEADER_LEN - len(head)
            if size - pos < need:
                self._head = head + data[pos:]
                return size
            if head:
                head += data[pos : pos + need]
                self._head = b""
            else:
                head = data[pos : pos + need]
            pos += need
            length = int.from_bytes(head[:3], "big")
            if not self._frame_ok(head[3], head[4], length):
                return max(start, 0)
            self._skip = length
        return size

    def _frame_ok(self, kind: int, flags: int, length: int) -> bool:
        limits = self._limits
        if kind in (_HEADERS, _CONTINUATION):
            self._block = self._block + length if kind == _CONTINUATION else length
            self._in_block = not flags & _FLAG_END_HEADERS
            if self._block > limits.max_header_block:
                return self._refuse(
                    ErrorCodes.ENHANCE_YOUR_CALM,
                    f"header block over {limits.max_header_block} bytes",
                )
        elif kind == _RST_STREAM:
            if self._resets.hit(self._clock()):
                return self._refuse(
                    ErrorCodes.ENHANCE_YOUR_CALM,
                    f"over {limits.max_resets} stream resets in {limits.reset_window:g}s",
                )
        elif kind == _SETTINGS and not flags & _FLAG_ACK:
            if self._settings.hit(self._clock()):
                return self._refuse(ErrorCodes.ENHANCE_YOUR_CALM, "SETTINGS flood")
        elif kind == _PING and not flags & _FLAG_ACK:
            if self._pings.hit(self._clock()):
                return self._refuse(ErrorCodes.ENHANCE_YOUR_CALM, "PING flood")
        elif (
            kind == _PRIORITY or (kind == _DATA and not length and not flags & _FLAG_END_STREAM)
        ) and self._noops.hit(self._clock()):
            return self._refuse(ErrorCodes.ENHANCE_YOUR_CALM, "empty frame flood")
        return True

    def count_reset(self) -> bool:
        """A stream reset the *server* sent for the client's fault (a malformed request,
        a flow-control error): counted with the client's own, since a client can make
        us reset streams as cheaply as it resets them itself ("MadeYouReset",
        CVE-2025-8671). True when over the bound (`violation` set)."""
        if self._resets.hit(self._clock()):
            self._refuse(ErrorCodes.ENHANCE_YOUR_CALM, "too many malformed streams")
            return True
        return False

    def _refuse(self, code: ErrorCodes, reason: str) -> bool:
        self.violation = (code, reason)
        return False
