"""Reasons for pausing a client connection's reads: bit flags, reading resumes when
none is left (its own module so that the compiled client and upstream modules, which
declare each other's types, import no names from each other)."""

PAUSE_PIPELINE = 1  # a request is queued behind the one in flight
PAUSE_UPSTREAM_FULL = 2  # the backend's socket buffer is full
PAUSE_WAITING = 4  # body bytes buffered while a backend connection is being made
PAUSE_HELD = 8  # an upgrade request waits for its response (101 or not)
PAUSE_REJECTED = 16  # a malformed request waits for the answers before it
