"""How the HTTP/1.1 client protocol refuses a malformed request (client.py's
`ClientProtocol`): none of it reaches a backend; the complete requests before it are
answered first, in order, then the error (RFC 9112 §9.3.2); then the connection
lingers, so that the client reads the answer instead of a reset.

Functions of the protocol rather than its methods: this is the error path, and it
keeps client.py to its parsing and flow. They read and write the protocol's public
fields (client.pxd), in both forms.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from haproxyd.proxy.errors import error_response
from haproxyd.proxy.flow import LINGER_SECONDS, PAUSE_REJECTED, T_LINGER

if TYPE_CHECKING:
    from haproxyd.proxy.client import ClientProtocol

log = logging.getLogger("haproxyd.proxy")


def reject(client: ClientProtocol, status: int, reason: str) -> None:
    """A malformed request: make sure none of it reaches a backend, answer the
    complete requests before it in order, then the error, then close."""
    if log.isEnabledFor(logging.INFO):
        log.info("rejected request from %s: %d %s", client.peer_ip, status, reason)
    queue = client.queue
    current = client.current
    # The client's X-Request-ID, when the bad request's head got that far.
    request_id = current.request_id if current is not None else b""
    client.current = None
    if queue and not queue[-1].request_complete:
        # The bad bytes are in this request's body (a bad chunk): if it is already
        # streaming to a backend, cut that connection so it never sees a complete,
        # reinterpreted request.
        bad = queue.pop()
        if bad.conn is not None:
            bad.cut_backend()
            bad._finish_backend(ok=False)
        if bad.response_started:
            client.abort()  # its response began: a cut is the only signal left
            return
    if queue and not client.closed:
        # Complete requests before the bad bytes: each gets its answer first (a
        # retried POST dropped here would run twice), then the error (RFC 9112 §9.3.2).
        client._rejection = (status, reason, request_id)
        client.pause_reading_for(PAUSE_REJECTED)
        client._dispatch_head()
        return
    send_rejection(client, status, reason, request_id)


def send_rejection(client: ClientProtocol, status: int, reason: str, request_id: bytes) -> None:
    """The error answer to a malformed request, once nothing is before it."""
    client._rejection = None
    if not client.closed:
        request_id = request_id or client.runtime.request_ids.next()
        client.transport.write(error_response(status, request_id, reason, close=True))
        client.runtime.count_rejected(status)
    client.queue.clear()
    linger(client)


def linger(client: ClientProtocol) -> None:
    """Close after an error answer so that the client can read it: half-close, then
    read and discard what it still sends (the rest of a refused body, say) until it
    closes or LINGER_SECONDS pass. A plain close with unread bytes would send a
    reset, and the client's stack would drop the answer unread (nginx's
    lingering_close, HAProxy's lingering)."""
    if client.closed:
        return
    transport = client.transport
    if not transport.can_write_eof():  # TLS: no half-close
        client.close()
        return
    client._discarding = True
    client.queue.clear()
    client.current = None
    transport.write_eof()  # after what is buffered
    client.timeout_kind = T_LINGER
    client.deadline = client.clock() + LINGER_SECONDS
    client._paused = 0
    transport.resume_reading()
