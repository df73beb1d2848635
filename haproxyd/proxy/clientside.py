"""The interface between a client protocol and the exchanges it carries: `ClientSide`,
what an `Exchange` (exchange.py) needs of the protocol that carried its request.
HTTP/1.1's `ClientProtocol` (client.py) derives from it, and so does HTTP/2's
`StreamClient` (h2front.py), one per stream: both feed the same exchange.

The response reaches the client through four calls, `send_head`, the body's bytes
(`writelines`), `send_end` and, for the proxy's own answers, `send_error`. The base
class frames them as HTTP/1.1 (the status line and headers the exchange was given are
already HTTP/1.1 lines, and so is a chunked body's framing), so that the common
protocol pays no translation; HTTP/2 overrides them (and `send_continue`) and sends
frames instead.

Compiled (setup.py), `ClientSide` is an extension type with the fields
`clientside.pxd` declares, and the exchange calls its methods through the type's method
table, whichever protocol implements them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from haproxyd.proxy.errors import error_response
from haproxyd.proxy.headers import CONTENT_LENGTH, CRLF, build_response_head, trailer_block

if TYPE_CHECKING:
    from haproxyd.proxy.exchange import Exchange
    from haproxyd.proxy.upstream import UpstreamConnection


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientSide:
    """What an exchange needs of the client protocol that carried its request: the
    interface every client protocol implements (HTTP/1.1: client.ClientProtocol).

    A base class rather than a `typing.Protocol` so that, compiled, the exchange calls
    these methods through the extension type's method table (a C call) whichever
    protocol it talks to. Every method is called on the event loop by the exchange."""

    __slots__ = ("clock", "closed", "peer_ip", "runtime")

    # The fields, set by the protocol's own __init__ and read by the exchange:
    # `runtime` (the process's ProxyRuntime, a ProxyRuntimeBase), `clock` (its loop's
    # time), `closed` (the client is gone: nothing more is written), `peer_ip` (for
    # the balancer's keys and the access log).

    # -- the response, as HTTP/1.1 (HTTP/2 overrides these) --

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        parts: list[bytes],
        specials: list[tuple[int, bytes]],
    ) -> None:
        """The backend's response head for the client: `parts` are the status line
        and the forwarded header lines (from index 1), `specials` the (kind, value) of
        its framing, Connection and Upgrade headers (headers.py). The head waits in
        `exchange.out` for the body's first bytes (one write); the exchange's framing
        flags (`chunked_out`, `read_to_close`, `close_after`) are set here."""
        if self.runtime.echo_trace_id and exchange.trace is not None:
            parts += (b"X-Trace-ID: ", exchange.trace[0], CRLF)
        if (
            len(specials) == 1
            and specials[0][0] == CONTENT_LENGTH
            and exchange.keep_alive
            and not (
                exchange.upgrade or exchange.http10 or exchange.is_head or exchange.close_after
            )
            and not self.runtime.draining
        ):
            # The common response: framed by Content-Length alone, to a keep-alive
            # HTTP/1.1 client (what headers.build_response_head would build, in fewer
            # steps).
            parts += (
                b"Content-Length: ",
                specials[0][1],
                b"\r\nX-Request-ID: ",
                exchange.request_id,
                b"\r\n\r\n",
            )
            exchange.out = [b"".join(parts)]
            return
        built = build_response_head(
            status,
            parts,
            specials,
            exchange.request_id,
            upgrade=exchange.upgrade,
            is_head=exchange.is_head,
            http10=exchange.http10,
            keep_alive=exchange.keep_alive,
            close_after=exchange.close_after,
            draining=self.runtime.draining,
        )
        exchange.chunked_out = built.chunked_out
        exchange.read_to_close = built.read_to_close
        exchange.close_after = built.close_after
        exchange.out = [built.head]

    def send_end(self, exchange: Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
        """The response ended (`trailers`: the backend's, if any): write what is left
        of it, the last chunk and the trailers that may be forwarded included."""
        out = exchange.out
        if exchange.chunked_out:
            out.append(trailer_block(trailers))
        if out:
            exchange.out = []
            self.writelines(out)

    def send_error(self, exchange: Exchange, status: int, reason: str) -> None:
        """The proxy's own answer to `exchange` (no byte of a response went out)."""
        trace = exchange.trace
        self.write(
            error_response(
                status,
                exchange.request_id,
                reason,
                close=exchange.close_after or not exchange.keep_alive,
                trace_id=trace[0] if trace is not None and self.runtime.echo_trace_id else None,
            )
        )

    def send_continue(self) -> None:
        """A backend is attached to a request that expects 100-continue."""
        self.write(_CONTINUE)

    # -- the rest, which every protocol implements --

    def write(self, data: bytes) -> None:
        """Send `data` to the client (nothing once it is closed)."""
        raise NotImplementedError

    def writelines(self, data: list[bytes]) -> None:
        """Send `data` to the client in one write (nothing once it is closed)."""
        raise NotImplementedError

    def pause_reading_for(self, reason: int) -> None:
        """Stop reading the client for `reason` (a flow.PAUSE_* flag)."""
        raise NotImplementedError

    def resume_reading_for(self, reason: int) -> None:
        """`reason` is gone; reading resumes when no other one is left."""
        raise NotImplementedError

    def touch(self) -> None:
        """Activity on the exchange in flight: push its inactivity deadline."""
        raise NotImplementedError

    def set_deadline(self, kind: int) -> None:
        """The connection's one deadline is now of `kind` (flow.T_*), from now."""
        raise NotImplementedError

    def set_deadline_at(self, kind: int, deadline: float) -> None:
        """The connection's one deadline is of `kind`, at loop time `deadline`."""
        raise NotImplementedError

    def exchange_done(self, exchange: Exchange) -> None:
        """`exchange` ended (answered, failed or cut): report it, start the next one."""
        raise NotImplementedError

    def start_tunnel(self, conn: UpstreamConnection, exchange: Exchange, rest: bytes) -> None:
        """The backend answered 101: the connection becomes a byte tunnel to `conn`
        (`rest`: the backend's bytes after its 101)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Cut the client connection (a response that began cannot end honestly)."""
        raise NotImplementedError
