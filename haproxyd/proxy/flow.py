"""Flow control and timeouts of a client connection: the reasons for pausing its reads
and the kinds of its one deadline. Their own module so that the compiled client,
exchange and upstream modules, which declare each other's types, import no names from
each other."""

# Reasons for pausing a client connection's reads: bit flags, reading resumes when none
# is left.
PAUSE_PIPELINE = 1  # a request is queued behind the one in flight
PAUSE_UPSTREAM_FULL = 2  # the backend's socket buffer is full
PAUSE_WAITING = 4  # body bytes buffered while a backend connection is being made
PAUSE_HELD = 8  # an upgrade request waits for its response (101 or not)
PAUSE_REJECTED = 16  # a malformed request waits for the answers before it

# Timeout kinds of a client connection (one deadline at a time, checked by the sweeper,
# ProxyRuntime._sweep_forever).
T_IDLE = 0  # between requests (keep-alive)
T_HEADER = 1  # a request's headers are arriving
T_RESPONSE = 2  # waiting on, or streaming, a backend's response
T_TUNNEL = 3  # upgraded connection
T_QUEUE = 4  # waiting for a backend slot
T_LINGER = 5  # after an error answer: draining what the client still sends

LINGER_SECONDS = 5.0  # nginx's lingering_timeout; its lingering_time is 30 s
