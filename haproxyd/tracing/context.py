"""W3C Trace Context (https://www.w3.org/TR/trace-context/): reading a client's
`traceparent`. What the proxy sends instead is request.TraceIds' (compiled with the
data plane, since it runs on every request while tracing is on); this runs only for
requests that carry one, which take llhttp's special path anyway."""

from __future__ import annotations

_HEX = frozenset(b"0123456789abcdef")  # lower case only: upper case is invalid (§3.2.2)
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, int] | None:
    """(trace id, parent id, flags) of a valid `traceparent` value, else None.

    Version 00 is exactly 55 bytes; a later version (but ff, which is invalid) may be
    longer, and its first four fields are read as version 00's (§3.2.4)."""
    if len(value) < 55 or value[2] != 45 or value[35] != 45 or value[52] != 45:  # "-"
        return None
    version = value[:2]
    if version == b"00":
        if len(value) != 55:
            return None
    elif version == b"ff" or (len(value) > 55 and value[55] != 45):
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    flags = value[53:55]
    if not _HEX.issuperset(version + trace_id + parent_id + flags):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)
