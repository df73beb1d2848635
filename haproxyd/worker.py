"""A worker process (`workers: N > 1`): the data plane only.

The master sends the config (with this worker's listening sockets), then the live state
of every pool whenever it changes (health verdicts, weights, drains, failover decisions);
the worker applies them in place, so a reload never restarts it. It sends back, every
second, a snapshot of its counters, and in batches the outcomes that passive health
detection needs. When the master goes away, or on SIGTERM/SIGINT or a `stop` message,
it drains like a single-process daemon does and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

from haproxyd.balancer.state import Backend
from haproxyd.channel import Channel, ChannelClosed
from haproxyd.config import validate_document
from haproxyd.heap import freeze_heap
from haproxyd.proxy.listener import ListenerKey, sync_servers
from haproxyd.proxy.runtime import ProxyRuntime
from haproxyd.proxy.stats import RequestStats, backend_counters
from haproxyd.tasks import cancel_and_wait

log = logging.getLogger("haproxyd.worker")

STATS_INTERVAL = 1.0
PASSIVE_INTERVAL = 0.1


class PassiveBatch:
    """Outcomes for the master's passive detector, without one message per request:
    every failure and 5xx is kept, a run of successes on a backend becomes one entry
    (what "consecutive failures" needs)."""

    def __init__(self) -> None:
        self.items: list[list[Any]] = []
        self._last_ok: dict[str, bool] = {}

    def report(self, backend: Backend, ok: bool, status: int | None) -> None:
        good = ok and (status is None or status < 500)
        if good and self._last_ok.get(backend.id):
            return
        self._last_ok[backend.id] = good
        if len(self.items) < 10_000:
            self.items.append([backend.pool_name, backend.id, ok, status])

    def take(self) -> list[list[Any]]:
        items, self.items = self.items, []
        return items


class Worker:
    def __init__(self, channel: Channel, slot: int) -> None:
        self.channel = channel
        self.slot = slot
        self.loop = asyncio.get_running_loop()
        self.runtime = ProxyRuntime(self.loop)
        self.stats = RequestStats(self.loop.time)
        self.runtime.add_exchange_listener(self.stats.observe)
        self.passive = PassiveBatch()
        self.runtime.passive_report = self.passive.report
        self.servers: dict[ListenerKey, asyncio.Server] = {}
        self.started = False

    async def apply_config(self, message: dict[str, Any], sockets: list[socket.socket]) -> None:
        cfg = validate_document(message["doc"], source="master", env={})
        self.runtime.worker_count = int(message.get("workers", 1))
        self.runtime.apply(cfg)
        if not self.started and self.runtime.resolver is not None:
            await self.runtime.resolver.resolve_all()
        await sync_servers(self.runtime, self.servers, list(cfg.listeners), sockets)
        if not self.started:
            self.runtime.start()
            self.started = True
        freeze_heap()
        await self.channel.send({"op": "applied", "version": message.get("version")})

    async def run(self) -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        self.loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master reloads
        reporter = self.loop.create_task(self._report_forever())
        receiver = self.loop.create_task(self._receive(stop))
        await stop.wait()
        await cancel_and_wait(receiver)
        cfg = self.runtime.cfg
        if cfg is not None:
            await self.runtime.drain(list(self.servers.values()), cfg.timeouts.shutdown)
        await cancel_and_wait(reporter)
        with contextlib.suppress(OSError, ChannelClosed):
            await self._send_reports()
        await self.runtime.stop()
        self.channel.close()
        return 0

    async def _receive(self, stop: asyncio.Event) -> None:
        try:
            while True:
                message, sockets = await self.channel.recv()
                op = message.get("op")
                if op == "config":
                    await self.apply_config(message, sockets)
                    if message.get("first"):
                        await self.channel.send(
                            {"op": "ready", "pid": os.getpid(), "slot": self.slot}
                        )
                elif op == "pool":
                    self.runtime.sync_pool(
                        message["pool"],
                        message["backends"],
                        message["selectable"],
                        fallback=message.get("fallback"),
                        panic=bool(message.get("panic")),
                    )
                elif op == "shed":
                    self.runtime.shedding = bool(message.get("on"))
                elif op == "counters":
                    # The master asks now (a drain waiting for in-flight requests to
                    # end): a one-second-old snapshot would answer too early.
                    await self.channel.send(
                        {
                            "op": "counters",
                            "id": message.get("id"),
                            "backends": backend_counters(self.runtime.pools.values()),
                        }
                    )
                elif op == "stop":
                    break
                else:
                    for sock in sockets:
                        sock.close()
        except ChannelClosed:
            log.warning("worker %d: master gone, stopping", self.slot)
        except Exception:
            log.exception("worker %d: cannot apply a message from the master", self.slot)
        stop.set()

    async def _report_forever(self) -> None:
        ticks = 0
        every = max(1, round(STATS_INTERVAL / PASSIVE_INTERVAL))
        while True:
            await asyncio.sleep(PASSIVE_INTERVAL)
            ticks += 1
            try:
                if ticks % every == 0:
                    await self._send_reports()
                elif self.passive.items:
                    await self.channel.send({"op": "passive", "items": self.passive.take()})
            except (OSError, ChannelClosed):
                return

    async def _send_reports(self) -> None:
        if self.passive.items:
            await self.channel.send({"op": "passive", "items": self.passive.take()})
        snapshot = self.stats.snapshot(self.runtime.pools.values())
        snapshot["connections"] = len(self.runtime.connections)
        snapshot["rejected"] = dict(self.runtime.rejected)
        snapshot["tracing"] = self.runtime.span_counts.snapshot()  # each worker exports its own
        await self.channel.send({"op": "stats", "pid": os.getpid(), "snapshot": snapshot})


async def worker_main(fd: int, slot: int) -> int:
    worker = Worker(Channel(socket.socket(fileno=fd)), slot)
    return await worker.run()
