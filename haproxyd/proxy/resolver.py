"""Non-blocking DNS for backend host names (HAProxy `resolvers`, nginx `resolve`).

Names are resolved with aiodns (c-ares) so the event loop never blocks, re-resolved every
`resolver.interval` (or sooner when the answer's TTL is shorter), and a failed lookup
keeps the last good answer: a DNS outage must not empty a pool. Every address of a name
takes part: new upstream connections rotate over them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import aiodns

from haproxyd.tasks import cancel_and_wait

log = logging.getLogger("haproxyd.resolver")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Resolver:
    """Owns the resolved addresses of every backend host name of one process."""

    def __init__(self, *, interval: float, timeout: float, nameservers: list[str]) -> None:
        self.interval = interval
        self.timeout = timeout
        self.nameservers = nameservers
        self._answers: dict[str, tuple[str, ...]] = {}
        self._names: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._dns: aiodns.DNSResolver | None = None

    def addresses(self, host: str) -> tuple[str, ...]:
        """The last good answer for `host` (empty when it never resolved)."""
        return self._answers.get(host, ())

    def names(self) -> set[str]:
        return set(self._names)

    def track(self, hosts: set[str]) -> None:
        """The set of names to keep resolved (IP literals are ignored)."""
        self._names = {h for h in hosts if not is_ip_literal(h)}
        for gone in set(self._answers) - self._names:
            del self._answers[gone]

    async def resolve_all(self) -> None:
        await asyncio.gather(*(self._resolve(name) for name in sorted(self._names)))

    async def _resolve(self, name: str) -> float:
        """Resolve one name; returns the TTL to wait before the next lookup."""
        if self._dns is None:
            kwargs = {"timeout": self.timeout}
            if self.nameservers:
                kwargs["nameservers"] = self.nameservers
            self._dns = aiodns.DNSResolver(**kwargs)
        try:
            result = await self._dns.getaddrinfo(
                name, family=socket.AF_UNSPEC, port=None, type=socket.SOCK_STREAM
            )
        except aiodns.error.DNSError as exc:
            if log.isEnabledFor(logging.WARNING):
                kept = self._answers.get(name, ())
                log.warning("resolving %s failed (%s); keeping %s", name, exc, list(kept))
            return self.interval
        addresses: list[str] = []
        ttl = self.interval
        for node in result.nodes:
            address = node.addr[0]
            if isinstance(address, bytes):
                address = address.decode()
            if address not in addresses:
                addresses.append(address)
            if node.ttl:
                ttl = min(ttl, max(1.0, float(node.ttl)))
        if addresses:
            if tuple(addresses) != self._answers.get(name) and log.isEnabledFor(logging.INFO):
                log.info("%s resolves to %s", name, addresses)
            self._answers[name] = tuple(addresses)
        return ttl

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            waits = await asyncio.gather(*(self._resolve(n) for n in sorted(self._names)))
            await asyncio.sleep(min(waits, default=self.interval))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._dns is not None:
            self._dns.cancel()
            self._dns = None
