"""The backend-name resolver against a real DNS server on loopback (a tiny authoritative
responder written for the test): answers, TTL-driven re-resolution, and the rule that a
failed lookup keeps the last good answer."""

from __future__ import annotations

import asyncio
import struct

import pytest

from haproxyd.proxy.resolver import Resolver

NAME = "backends.haproxyd.test"


class DnsServer(asyncio.DatagramProtocol):
    """Answers A queries for NAME with `self.addresses` (TTL `self.ttl`), or SERVFAIL
    when `self.fail` is set. Counts the queries it saw."""

    def __init__(self) -> None:
        self.addresses = ["127.0.0.2"]
        self.ttl = 1
        self.fail = False
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        ident, _flags, qdcount = struct.unpack("!HHH", data[:6])
        # The question section: labels up to the zero byte, then qtype and qclass.
        end = data.index(b"\x00", 12) + 5
        question = data[12:end]
        qtype = struct.unpack("!H", data[end - 4 : end - 2])[0]
        labels, pos = [], 0
        while question[pos]:
            labels.append(question[pos + 1 : pos + 1 + question[pos]].decode())
            pos += 1 + question[pos]
        self.queries += 1
        if self.fail:
            header = struct.pack("!HHHHHH", ident, 0x8182, qdcount, 0, 0, 0)  # SERVFAIL
            self.transport.sendto(header + question, addr)  # type: ignore[union-attr]
            return
        answers = b""
        count = 0
        if ".".join(labels) == NAME and qtype == 1:
            for address in self.addresses:
                rdata = bytes(int(part) for part in address.split("."))
                answers += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, self.ttl, 4) + rdata
                count += 1
        header = struct.pack("!HHHHHH", ident, 0x8580, qdcount, count, 0, 0)
        self.transport.sendto(header + question + answers, addr)  # type: ignore[union-attr]


@pytest.fixture
async def dns_server():
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(DnsServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield server, f"127.0.0.1:{port}"
    transport.close()


async def wait_for(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


async def test_name_resolves_to_every_address(dns_server):
    server, nameserver = dns_server
    server.addresses = ["127.0.0.2", "127.0.0.3"]
    resolver = Resolver(interval=30, timeout=2, nameservers=[nameserver])
    resolver.track({NAME, "127.0.0.1"})
    await resolver.resolve_all()
    assert sorted(resolver.addresses(NAME)) == ["127.0.0.2", "127.0.0.3"]
    assert resolver.addresses("127.0.0.1") == ()  # IP literals are never looked up
    await resolver.stop()


async def test_answer_is_refreshed_after_its_ttl_and_kept_when_dns_fails(dns_server):
    server, nameserver = dns_server
    resolver = Resolver(interval=30, timeout=1, nameservers=[nameserver])
    resolver.track({NAME})
    resolver.start()
    try:
        await wait_for(lambda: resolver.addresses(NAME) == ("127.0.0.2",))
        # The TTL (1 s) is shorter than the interval (30 s): the change is picked up.
        server.addresses = ["127.0.0.4"]
        await wait_for(lambda: resolver.addresses(NAME) == ("127.0.0.4",))
        # DNS now fails: lookups keep happening, the last good answer stays.
        server.fail = True
        seen = server.queries
        await wait_for(lambda: server.queries > seen + 1)
        assert resolver.addresses(NAME) == ("127.0.0.4",)
    finally:
        await resolver.stop()
