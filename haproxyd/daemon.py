"""The daemon: owns the config, health, admin, the listening sockets and the signals.

Two process models, chosen by `workers:` at start:
- `workers: 1` (the default): one process; the data plane runs on the daemon's own loop.
- `workers: N > 1`: this process is the master (config, health, failover, admin, the
  listening sockets) and N worker processes run the data plane (`supervisor.py`).

Signal handlers only enqueue; `Daemon.run` acts on the queue (HAProxy `signal.c`,
uvicorn's supervisor). Shutdown is staged: stop accepting -> let in-flight requests
finish within `timeouts.shutdown` (idle keep-alive connections close after
`timeouts.drain_grace`, busy ones after their current response, which carries
`Connection: close`) -> cut the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from haproxyd.admin.server import AdminServer
from haproxyd.balancer.state import BackendState, Pool
from haproxyd.cluster.manager import SHARED_SECTIONS, ClusterManager
from haproxyd.config import Config, ConfigError, load_config, validate_document
from haproxyd.config.schema import FailoverConfig
from haproxyd.failover.events import EventLog
from haproxyd.failover.machine import FailoverMachine
from haproxyd.health import HealthEvent, HealthScheduler
from haproxyd.heap import freeze_heap
from haproxyd.proxy.listener import ListenerKey, ListenerSockets, sync_servers
from haproxyd.proxy.runtime import ProxyRuntime, check_buildable
from haproxyd.supervisor import WorkerSet

log = logging.getLogger("haproxyd")


class StartupError(Exception):
    """The daemon could not start (a busy port, a worker that never came up)."""


class Daemon:
    def __init__(
        self, config: Config, *, config_path: Path | None = None, pid_file: Path | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.pid_file = pid_file
        self.config_version = 1
        self.started = time.time()
        self.runtime: ProxyRuntime | None = None
        self.admin: AdminServer | None = None
        self.health: HealthScheduler | None = None
        self.workers: WorkerSet | None = None  # set when `workers: N > 1`
        self.events = EventLog()  # failover decisions, shared with the admin API
        # Decides every pool's active set; master-only (workers mirror the outcome).
        self.failover = FailoverMachine(self.events)
        self.cluster: ClusterManager | None = None  # set when `cluster.enabled`
        self.sockets = ListenerSockets()
        self.servers: dict[ListenerKey, asyncio.Server] = {}  # in-process data plane only
        self.reloads = {"ok": 0, "error": 0}
        self.last_reload: dict[str, object] = {"result": None, "errors": [], "time": None}
        # Set by the first step of `shutdown`: GET /ready answers 503 from then on, so a
        # VIP or an orchestrator moves traffic away while in-flight requests drain.
        self.stopping = False
        self._signals: asyncio.Queue[signal.Signals] = asyncio.Queue()

    # -- lifecycle --

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self.runtime = runtime = ProxyRuntime(loop)
        multi = cfg.workers > 1
        if multi:
            self.workers = WorkerSet(self)
            runtime.pool_listeners.append(self.workers.on_pool_change)
        runtime.apply(cfg)
        # One prober per node; it owns the up/down verdicts from here on.
        self.health = health = HealthScheduler(node_id=cfg.node.id)
        health.apply_config(self._live_pools(), cfg)
        health.subscribe(self._on_health_event)
        # After health has set the start-up states, so the first decision sees them.
        self.failover.attach(self._live_pools(), self._failover_settings(cfg))
        runtime.passive_report = health.report
        self.sockets.sync(list(cfg.listeners), slots=cfg.workers)
        if multi:
            assert self.workers is not None
            await self.workers.start(cfg.workers)
        else:
            if runtime.resolver is not None:
                await runtime.resolver.resolve_all()
            await self._serve_in_process(cfg)
            runtime.start()
        await health.start()
        await self.failover.start()
        self.admin = AdminServer(self)
        await self.admin.start()
        if self.workers is not None and self.admin.state is not None:
            self.admin.state.worker_snapshots = self.workers.snapshots
            self.admin.state.worker_counters = self.workers.live_counters
        if cfg.cluster.enabled:
            # Last: it needs the admin URL, and may apply a newer shared config.
            self.cluster = ClusterManager(self)
            await self.cluster.start()
        for address in self.listen_addresses():
            log.info("listening on %s", address)
        if multi:
            assert self.workers is not None
            log.info("%d workers: pids %s", cfg.workers, self.workers.pids())
        freeze_heap()

    async def _serve_in_process(self, cfg: Config) -> None:
        assert self.runtime is not None
        listeners = list(cfg.listeners)
        sockets = [sock.dup() for sock in self.sockets.for_slot(listeners, 0)]
        await sync_servers(self.runtime, self.servers, listeners, sockets)

    def _live_pools(self) -> dict[str, Pool]:
        assert self.runtime is not None
        return {name: pool.state for name, pool in self.runtime.pools.items()}

    @staticmethod
    def _failover_settings(cfg: Config) -> dict[str, FailoverConfig]:
        return {name: pool.failover for name, pool in cfg.pools.items()}

    def _on_health_event(self, event: HealthEvent) -> None:
        if self.health is not None and self.runtime is not None:
            shedding = self.config.on_unhealthy == "shed" and not self.health.node_healthy
            if shedding != self.runtime.shedding:
                self.runtime.shedding = shedding
                if self.workers is not None:
                    self.workers.broadcast({"op": "shed", "on": shedding})

    # -- what the cluster manager reads and asks (haproxyd/cluster/manager.py) --

    def admin_url(self) -> str:
        if self.admin is not None and self.admin.addresses:
            return self.admin.url
        return f"http://{self.config.admin.address}"

    def failover_pool(self, name: str) -> Pool | None:
        pool = self.runtime.pools.get(name) if self.runtime is not None else None
        return pool.state if pool is not None else None

    def node_healthy(self) -> bool:
        return self.health.node_healthy if self.health is not None else True

    def health_verdicts(self) -> dict[str, str]:
        """This node's up/down verdict of every backend that has one, `pool/backend`."""
        out: dict[str, str] = {}
        if self.runtime is not None:
            for name, pool in self.runtime.pools.items():
                for backend in pool.state.backends.values():
                    if backend.state == BackendState.UP:
                        out[f"{name}/{backend.id}"] = "up"
                    elif backend.state == BackendState.DOWN:
                        out[f"{name}/{backend.id}"] = "down"
        return out

    def with_shared(self, cfg: Config, document: dict[str, object], source: str) -> Config:
        """`cfg` with its shared sections (pools, routes) taken from the cluster's
        `document`. Raises ConfigError if the result is not valid."""
        data = cfg.model_dump(mode="json")
        data.update({k: v for k, v in document.items() if k in SHARED_SECTIONS})
        return validate_document(data, source=source, env={})

    async def apply_cluster_config(self, document: dict[str, object], version: int) -> list[str]:
        """Run the cluster's shared config `version` (the rest stays as it is)."""
        try:
            cfg = self.with_shared(self.config, document, f"cluster config version {version}")
        except ConfigError as exc:
            return [str(issue) for issue in exc.issues]
        if cfg == self.config:
            return []
        log.info("cluster: applying shared config version %d", version)
        return await self.reload(cfg)

    # -- what GET /ready asks (haproxyd/admin/ready.py, `ReadinessHost`) --

    def listeners_accepting(self) -> tuple[int, int]:
        """(configured listeners that accept connections now, configured listeners).
        With workers, the master's sockets queue connections for them, but only a
        running worker answers: none running counts as nothing accepting."""
        listeners = self.config.listeners
        if self.workers is not None:
            if not any(w.ready.is_set() for w in self.workers.workers.values()):
                return 0, len(listeners)
            bound = set(self.sockets.slots)
        else:
            bound = {(k[0], k[1]) for k, server in self.servers.items() if server.is_serving()}
        accepting = sum((i.address.host, i.address.port) in bound for i in listeners)
        return accepting, len(listeners)

    def selectable_backends(self) -> dict[str, int]:
        """Per pool, how many backends the balancer may pick now (up, not drained or in
        maintenance, in the failover decision's active set)."""
        if self.runtime is None:
            return {}
        return {name: len(pool.state.selectable) for name, pool in self.runtime.pools.items()}

    def config_errors(self) -> list[str]:
        """Why the running config is not the one this node should run. A rejected
        reload is not such a reason: the previous config keeps serving, as with nginx
        and HAProxy. A cluster's shared config that this node could not apply is: the
        node routes by other pools and routes than its peers."""
        if self.runtime is None:
            return ["not started"]
        if self.cluster is not None and self.cluster.config_error is not None:
            return [self.cluster.config_error]
        return []

    def fenced(self) -> str | None:
        """Why the cluster goes on without this node (None standalone, or a member)."""
        return self.cluster.fenced if self.cluster is not None else None

    def listen_addresses(self) -> list[str]:
        out = []
        for socks in self.sockets.slots.values():
            host, port = socks[0].getsockname()[:2]
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signals.put_nowait, sig)
        wrote_pid = False
        try:
            try:
                await self.start()
            except OSError as exc:
                # Without "[Errno N]" when the message names the address (listener.py).
                reason = exc.strerror if exc.strerror and exc.filename is None else exc
                raise StartupError(f"cannot listen: {reason}") from exc
            except RuntimeError as exc:
                raise StartupError(str(exc)) from exc
            if self.pid_file is not None:
                # Only once started: a second instance that fails on a busy port must
                # not clobber (or, leaving, delete) the running one's pid file.
                self.pid_file.write_text(f"{os.getpid()}\n")
                wrote_pid = True
            while True:
                sig = await self._signals.get()
                if sig == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("received %s: shutting down", sig.name)
                    break
            await self.shutdown()
        finally:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if wrote_pid and self.pid_file is not None:
                self.pid_file.unlink(missing_ok=True)
        return 0

    # -- reload --

    async def reload(self, cfg: Config | None = None) -> list[str]:
        """Re-read the file (or apply `cfg`); returns the errors (empty on success).
        An invalid config changes nothing; a valid one is applied in place, without
        failing or delaying any request."""
        assert self.runtime is not None
        try:
            if cfg is None:
                if self.config_path is None:
                    raise ValueError("no config file to reload")
                cfg = load_config(self.config_path)
                if self.cluster is not None and self.cluster.document is not None:
                    # In a cluster, pools and routes are the cluster's (the file was
                    # their bootstrap); the rest of the file applies to this node.
                    cfg = self.with_shared(cfg, self.cluster.document, str(self.config_path))
            check_buildable(cfg)
            multi = self.workers is not None
            if (cfg.workers > 1) != multi:
                log.warning(
                    "workers: %d -> %d switches the process model: takes effect at restart",
                    self.config.workers,
                    cfg.workers,
                )
            slots = cfg.workers if multi else 1
            if not multi:
                cfg = cfg.model_copy(update={"workers": self.config.workers})
            removed = self.sockets.sync(list(cfg.listeners), slots=slots)
        except ConfigError as exc:
            return self._reload_failed([str(issue) for issue in exc.issues])
        except (OSError, ValueError) as exc:
            return self._reload_failed([f"reload: {exc}"])
        with self.failover.deferred():
            self.runtime.apply(cfg)
            if self.health is not None:
                self.health.apply_config(self._live_pools(), cfg)
        # Re-attach to the rebuilt pools (decisions of unchanged pools carry over) and
        # decide once, on the states health has set.
        self.failover.attach(self._live_pools(), self._failover_settings(cfg))
        self.config = cfg
        self.config_version += 1
        if self.workers is not None:
            try:
                await self.workers.reload(slots)
            except (OSError, RuntimeError) as exc:
                # The config is applied (the master runs it; live workers have it);
                # a worker that failed to start is restarted by the supervisor.
                log.error("reload: worker set: %s", exc)
        else:
            await self._serve_in_process(cfg)
            if self.runtime.resolver is not None:
                await self.runtime.resolver.resolve_all()
        for sock in removed:  # every server on them is closed by now
            sock.close()
        freeze_heap()
        self.reloads["ok"] += 1
        self.last_reload = {"result": "ok", "errors": [], "time": time.time()}
        log.info("configuration reloaded (version %d)", self.config_version)
        return []

    def _reload_failed(self, errors: list[str]) -> list[str]:
        self.reloads["error"] += 1
        self.last_reload = {"result": "error", "errors": errors, "time": time.time()}
        log.error("reload rejected, running config kept:\n  %s", "\n  ".join(errors))
        return errors

    # -- shutdown --

    async def shutdown(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        timeout = self.config.timeouts.shutdown
        self.stopping = True
        if self.cluster is not None:
            # Leave first (and give up the lease) so that a successor takes over at
            # once instead of after the lease runs out.
            await self.cluster.stop()
        # Our copies of the listening sockets go first: once the serving copies close
        # too, new connections are refused at once rather than queued and then reset.
        self.sockets.close()
        if self.workers is not None:
            await self.workers.stop(timeout)
        else:
            await runtime.drain(list(self.servers.values()), timeout)
        if self.admin is not None:
            await self.admin.stop()
        if self.health is not None:
            await self.health.stop()
        await self.failover.stop()
        await runtime.stop()
        log.info("stopped")
