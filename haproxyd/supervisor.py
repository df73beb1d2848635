"""The master's side of `workers: N > 1`: spawning, feeding and restarting workers.

The master keeps configuration, health, failover, admin and the listening sockets
(`ListenerSockets`, one SO_REUSEPORT socket per listener and worker slot). Each worker
slot gets its sockets over the channel; a worker that dies is restarted on the same slot
with back-off, and since the master still holds that slot's sockets, connections that
arrived meanwhile wait in the backlog instead of being refused.

State flows one way (master -> workers: config, then every pool change as it happens);
counters flow back (a snapshot per worker per second, merged for the admin API and
/metrics; a dead worker's last counters are kept so totals never go down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from haproxyd.balancer.state import Pool
from haproxyd.channel import Channel, ChannelClosed
from haproxyd.proxy.runtime import backend_state_message
from haproxyd.tasks import cancel_and_wait

if TYPE_CHECKING:
    from haproxyd.config.schema import Config
    from haproxyd.health.scheduler import HealthScheduler
    from haproxyd.proxy.listener import ListenerSockets
    from haproxyd.proxy.runtime import ProxyRuntime

log = logging.getLogger("haproxyd.supervisor")

READY_TIMEOUT = 20.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a worker up this long resets its slot's back-off
COUNTERS_TIMEOUT = 2.0  # a worker's answer to `live_counters`


class WorkerHost(Protocol):
    """What the master's worker set needs from the daemon it runs in (as
    `cluster.manager.ClusterHost`): the config to send, the sockets to hand over, the
    pools whose state workers mirror, and the health scheduler that takes the passive
    results workers observe."""

    config: Config
    config_version: int
    sockets: ListenerSockets
    runtime: ProxyRuntime | None
    health: HealthScheduler | None


class WorkerProcess:
    """One worker process as the master sees it."""

    def __init__(self, slot: int, process: asyncio.subprocess.Process, channel: Channel) -> None:
        self.slot = slot
        self.process = process
        self.channel = channel
        self.pid = process.pid
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self.applied_version = 0
        self.applied = asyncio.Event()
        self.snapshot: dict[str, Any] | None = None
        self.retiring = False
        self.queries: dict[int, asyncio.Future[list[dict[str, Any]]]] = {}  # by id
        self.reader: asyncio.Task[None] | None = None  # messages from the worker
        self.watcher: asyncio.Task[None] | None = None  # its exit


class WorkerSet:
    def __init__(self, host: WorkerHost) -> None:
        self.host = host
        self.workers: dict[int, WorkerProcess] = {}
        self.retiring: set[WorkerProcess] = set()  # told to stop, still draining
        self.count = 0
        self.restarts = 0
        self.stopping = False
        self._backoff: dict[int, float] = {}
        self._retired: list[dict[str, Any]] = []  # last snapshots of workers that are gone
        self._sends: set[asyncio.Task[None]] = set()
        self._queries = 0  # ids of `live_counters` questions

    # -- lifecycle --

    async def start(self, count: int) -> None:
        self.count = count
        spawned = [await self._spawn(slot) for slot in range(count)]
        await self._wait_ready(spawned)

    async def _wait_ready(self, workers: list[WorkerProcess]) -> None:
        waits = [asyncio.wait_for(w.ready.wait(), READY_TIMEOUT) for w in workers]
        try:
            await asyncio.gather(*waits)
        except TimeoutError:
            raise RuntimeError("a worker did not start in time (see its log above)") from None

    async def _spawn(self, slot: int) -> WorkerProcess:
        parent, child = Channel.pair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "haproxyd",
                "--log-level",
                logging.getLevelName(logging.getLogger().level).lower(),
                "_worker",
                "--fd",
                str(child.fileno()),
                "--slot",
                str(slot),
                pass_fds=(child.fileno(),),
            )
        finally:
            child.close()
        worker = WorkerProcess(slot, process, Channel(parent))
        self.workers[slot] = worker
        worker.reader = asyncio.create_task(self._read(worker))
        worker.watcher = asyncio.create_task(self._watch(worker))
        await self._send_config(worker, first=True)
        log.info("worker %d started (pid %d)", slot, worker.pid)
        return worker

    async def _send_config(self, worker: WorkerProcess, *, first: bool = False) -> None:
        host = self.host
        cfg = host.config
        sockets = host.sockets.for_slot(list(cfg.listeners), worker.slot)
        worker.applied.clear()
        await worker.channel.send(
            {
                "op": "config",
                "first": first,
                "doc": cfg.model_dump(mode="json"),
                "version": host.config_version,
                "workers": self.count,
                "nfds": len(sockets),
            },
            [sock.fileno() for sock in sockets],
        )
        assert host.runtime is not None
        for pool in host.runtime.pools.values():
            await worker.channel.send(backend_state_message(pool.state))
        await worker.channel.send({"op": "shed", "on": host.runtime.shedding})

    async def _read(self, worker: WorkerProcess) -> None:
        health = self.host.health
        with contextlib.suppress(ChannelClosed, OSError):
            while True:
                message, sockets = await worker.channel.recv()
                for sock in sockets:
                    sock.close()
                op = message.get("op")
                if op == "stats":
                    worker.snapshot = message.get("snapshot")
                elif op == "passive" and health is not None:
                    self._replay_passive(message.get("items", []))
                elif op == "ready":
                    worker.ready.set()
                elif op == "applied":
                    worker.applied_version = int(message.get("version") or 0)
                    worker.applied.set()
                elif op == "counters":
                    query = worker.queries.pop(int(message.get("id") or 0), None)
                    if query is not None and not query.done():
                        query.set_result(list(message.get("backends") or []))

    def _replay_passive(self, items: list[list[Any]]) -> None:
        runtime = self.host.runtime
        health = self.host.health
        if runtime is None or health is None:
            return
        for pool_name, backend_id, ok, status in items:
            pool = runtime.pools.get(pool_name)
            backend = pool.state.backends.get(backend_id) if pool is not None else None
            if backend is not None:
                health.report(backend, bool(ok), status)

    async def _watch(self, worker: WorkerProcess) -> None:
        code = await worker.process.wait()
        if worker.snapshot is not None:
            self._retire_snapshot(worker.snapshot)
            worker.snapshot = None
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        self.retiring.discard(worker)
        for query in worker.queries.values():  # no answer is coming
            if not query.done():
                query.set_exception(ChannelClosed("worker exited"))
        # The reader first (it unregisters the descriptor from the loop), then the
        # channel: closing a descriptor uvloop still polls aborts the master.
        await cancel_and_wait(worker.reader)
        worker.channel.close()
        if self.stopping or worker.retiring:
            return
        self.restarts += 1
        uptime = time.monotonic() - worker.started
        delay = BACKOFF_START if uptime > STABLE_AFTER else self._backoff.get(worker.slot, 0.0)
        self._backoff[worker.slot] = min(BACKOFF_MAX, max(BACKOFF_START, delay * 2))
        log.error(
            "worker %d (pid %d) exited with %s; restarting in %.1fs",
            worker.slot,
            worker.pid,
            code,
            delay,
        )
        await asyncio.sleep(delay)
        if not self.stopping and worker.slot < self.count and worker.slot not in self.workers:
            try:
                await self._spawn(worker.slot)
            except Exception:
                log.exception("cannot restart worker %d", worker.slot)

    def _retire_snapshot(self, snapshot: dict[str, Any]) -> None:
        # Keep the counters; a process that is gone has no requests in flight.
        for item in snapshot.get("backends", []):
            item["active"] = 0
        snapshot["connections"] = 0
        self._retired.append(snapshot)

    # -- state pushes --

    def on_pool_change(self, pool: Pool) -> None:
        """Pool listener: push the pool's live state to every worker, in order."""
        self.broadcast(backend_state_message(pool))

    def broadcast(self, message: dict[str, Any]) -> None:
        for worker in list(self.workers.values()):
            task = asyncio.create_task(self._send_quietly(worker, message))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    @staticmethod
    async def _send_quietly(worker: WorkerProcess, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ChannelClosed):
            await worker.channel.send(message)

    # -- reload --

    async def reload(self, count: int) -> None:
        """Apply the daemon's (new) config to every worker in place; grow or shrink the
        set to `count` (new workers start before extra ones are told to stop)."""
        old_count = self.count
        self.count = count
        current = [w for slot, w in sorted(self.workers.items()) if slot < count]
        for worker in current:
            with contextlib.suppress(OSError, ChannelClosed):  # it died: _watch restarts it
                await self._send_config(worker)
        spawned = [await self._spawn(slot) for slot in range(old_count, count)]
        await self._wait_ready(spawned)
        waits = [asyncio.wait_for(w.applied.wait(), READY_TIMEOUT) for w in current]
        results = await asyncio.gather(*waits, return_exceptions=True)
        if any(isinstance(r, Exception) for r in results):
            log.warning("a worker did not confirm the new configuration in time")
        for slot in range(count, old_count):
            worker = self.workers.pop(slot, None)
            if worker is not None:
                worker.retiring = True
                self.retiring.add(worker)
                await self._send_quietly(worker, {"op": "stop"})

    # -- reading --

    def snapshots(self) -> list[dict[str, Any]]:
        workers = [*self.workers.values(), *self.retiring]
        live = [w.snapshot for w in workers if w.snapshot is not None]
        return self._retired + live

    async def live_counters(self, timeout: float = COUNTERS_TIMEOUT) -> list[list[dict[str, Any]]]:
        """Every worker's backend counters (`metrics.backend_counters`), asked now, and
        those of workers that are gone (with nothing in flight). A worker that does not
        answer within `timeout` counts with its last snapshot."""
        workers = [*self.workers.values(), *self.retiring]
        answers = await asyncio.gather(*(self._ask_counters(w, timeout) for w in workers))
        return [s["backends"] for s in self._retired] + answers

    async def _ask_counters(self, worker: WorkerProcess, timeout: float) -> list[dict[str, Any]]:
        self._queries += 1
        query_id = self._queries
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        worker.queries[query_id] = future
        try:
            await worker.channel.send({"op": "counters", "id": query_id})
            return await asyncio.wait_for(future, timeout)
        except (OSError, ChannelClosed, TimeoutError):
            snapshot = worker.snapshot
            return list(snapshot["backends"]) if snapshot is not None else []
        finally:
            worker.queries.pop(query_id, None)

    def pids(self) -> list[int]:
        return [w.pid for _, w in sorted(self.workers.items())]

    def applied_versions(self) -> list[int]:
        """The config version each worker confirmed, by slot (lags `config_version`
        for the moment a reload takes to reach the workers)."""
        return [w.applied_version for _, w in sorted(self.workers.items())]

    # -- shutdown --

    async def stop(self, timeout: float) -> None:
        self.stopping = True
        workers = [*self.workers.values(), *self.retiring]
        for worker in workers:
            await self._send_quietly(worker, {"op": "stop"})
        waits = [asyncio.wait_for(w.process.wait(), timeout + 5.0) for w in workers]
        results = await asyncio.gather(*waits, return_exceptions=True)
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, Exception):
                log.warning("worker %d did not stop in time: killing it", worker.slot)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        for worker in workers:
            for task in (worker.reader, worker.watcher):
                if task is not None:
                    task.cancel()
