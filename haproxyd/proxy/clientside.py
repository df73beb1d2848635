"""The interface between a client protocol and the exchanges it carries: `ClientSide`,
what an `Exchange` (exchange.py) needs of the protocol that carried its request.
HTTP/1.1's `ClientProtocol` (client.py) derives from it; a second protocol (HTTP/2)
would too, and feed the same exchange.

Compiled (setup.py), `ClientSide` is an extension type with the fields
`clientside.pxd` declares, and the exchange calls its methods through the type's method
table, whichever protocol implements them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haproxyd.proxy.exchange import Exchange
    from haproxyd.proxy.upstream import UpstreamConnection


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
