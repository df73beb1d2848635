"""The health-probe scheduler: when each session probes, and what its verdicts change.

The sessions themselves (rise/fall counting, a backend's verdict, an agent's requests)
are in session.py, passive detection in passive.py; this module runs the timers and
the probes, keeps membership in step with the pools, and applies and publishes verdicts.

Modelled on HAProxy's `src/check.c` (per-server `check->health` counter between 0 and
rise+fall-1, `inter`/`fastinter`/`downinter`, `spread-checks`) and Envoy's
`health_checker_base_impl.h` (one `ActiveHealthCheckSession` per host, interval jitter,
a callback only when a host's health changes). Cost per probe: O(checks of that
backend) to recompute the backend's verdict; a transition also costs the pool's O(n)
snapshot rebuild (`Pool.refresh`).

Health verdict and admin state are kept apart. Each session has a status (`checking`,
`up`, `down`); a backend's verdict is `down` if any of its checks is down or passive
detection ejected it, else `checking` if any check has not passed yet, else `up`. The
scheduler owns the CHECKING/UP/DOWN values of `Backend.state` and writes them only
through `Pool.set_state`; DRAINING and MAINT are operator decisions that it never
overrides:

* MAINT backends are not probed. Their sessions fall back to `checking`, because a
  verdict from before the maintenance means nothing after it; when the operator ends
  the maintenance they are probed at once, and the backend takes traffic after the
  first pass.
* DRAINING backends are probed and their sessions' verdicts change as usual (visible in
  `statuses()` and events), but the state stays DRAINING. To end a drain, the admin API
  sets `verdict(pool, id)`, not UP blindly.
* An agent check's `drain`/`maint` puts the backend in that state and remembers that
  the agent did; the agent's `ready` undoes only what the agent did (an operator's
  drain or maint outranks the agent). While the agent holds a backend in MAINT, the
  agent check alone keeps running, so that it can say `ready`.

A backend with no checks and no passive ejection is UP. On a config reload (`update`)
sessions whose check probes the same thing on the same backend address keep their
status, counters and history (timing fields may change); a new check on a backend that
is already UP starts as `up`, so adding a check never drops traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from haproxyd.balancer.state import Backend, BackendState, Pool
from haproxyd.health.base import (
    NODE_ONLY_TYPES,
    NODE_TYPES,
    Check,
    CheckResult,
    create_check,
    probe_key,
)
from haproxyd.health.passive import PassiveDetector, PassiveDetectors
from haproxyd.health.session import (
    AGENT_TYPE,
    CHECKING,
    DOWN,
    UP,
    CheckEntry,
    CheckStatus,
    HealthEvent,
    NodeHealth,
    Session,
    Target,
    Timing,
)
from haproxyd.health.wheel import TimerWheel
from haproxyd.tasks import cancel_and_wait

if TYPE_CHECKING:
    from haproxyd.config.schema import Config, HealthCheckConfig, PoolConfig

log = logging.getLogger("haproxyd.health")

DEFAULT_CONCURRENCY = 512
EVENT_LOG_SIZE = 1000
WAKE_GRID = 0.02  # seconds: probes due within one slot of this grid start together


class HealthScheduler:
    """Runs every health check of every pool, and the node checks, in one event loop.

    All methods are called on the event loop thread of the process that owns the pools
    (the daemon's main process: one prober per node, not per worker). `report` is the
    data plane's hot-path call; everything else is for the daemon, the failover machine
    and the admin API.
    """

    def __init__(
        self,
        *,
        node_id: str = "node",
        max_concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._subscribers: list[Callable[[HealthEvent], Any]] = []
        self._pools: dict[str, Pool] = {}
        self._pool_checks: dict[str, list[CheckEntry]] = {}
        self._checks: dict[tuple[str, str], Check] = {}
        self._targets: dict[tuple[str, str], Target] = {}
        self._sessions: dict[tuple, Session] = {}
        self._node_sessions: dict[str, Session] = {}
        self._passive = PassiveDetectors(clock, self._on_passive)
        # The same dict, read directly on the data plane's `report` path.
        self._detectors: dict[str, PassiveDetector] = self._passive.by_pool
        self._listened: weakref.WeakSet[Pool] = weakref.WeakSet()
        self._paused: set[Session] = set()
        self._background: set[asyncio.Task] = set()
        self._events: deque[HealthEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self._sem: asyncio.Semaphore | None = None
        self._passive_task: asyncio.Task | None = None
        self._running = False
        self._syncing = False
        # Pools whose backends' states the probes changed and that have not been
        # refreshed yet: one refresh per pool per loop iteration, however many
        # verdicts arrived in it (1,000 backends coming up at once, or a burst of
        # timeouts, would otherwise rebuild the selectable set 1,000 times).
        self._dirty: dict[str, Pool] = {}
        self._wheel = TimerWheel(WAKE_GRID)

    # -- lifecycle -------------------------------------------------------------------

    def apply_config(self, pools: Mapping[str, Pool], config: Config) -> None:
        """`update` from a root `Config`: its pools' checks and its node checks."""
        self.update(pools, config.pools, config.node_checks)

    def update(
        self,
        pools: Mapping[str, Pool],
        configs: Mapping[str, PoolConfig],
        node_checks: Sequence[HealthCheckConfig] | None = None,
    ) -> None:
        """Install the checks of `configs` (pool name -> an object with `health_checks`
        and `passive`, e.g. a `PoolConfig`) on the live `pools`, and the node checks
        (None keeps the current ones). Usable before `start` and on every reload.

        Unchanged (pool, backend, address, check) sessions keep their state; the rest
        start fresh. Raises ValueError (and changes nothing) when a check cannot be
        built. Sets every backend's state from its verdict before returning, so call it
        before the listeners accept traffic.
        """
        # Build every new check first: a bad one must leave the running set untouched.
        pool_checks: dict[str, list[CheckEntry]] = {}
        checks: dict[tuple[str, str], Check] = {}
        for pool_name, pool_config in configs.items():
            if pool_name not in pools:
                continue
            entries: list[CheckEntry] = []
            for config in pool_config.health_checks:
                if config.type in NODE_ONLY_TYPES:
                    raise ValueError(
                        f"pools.{pool_name}: {config.type} is a node check, "
                        "put it under node_checks"
                    )
                key = probe_key(config)
                if any(key == e.key for e in entries):
                    continue  # the same check twice probes the same thing once
                check = self._checks.get((pool_name, key)) or _build_check(
                    config, f"pools.{pool_name}.health_checks", self.node_id
                )
                checks[(pool_name, key)] = check
                entries.append(CheckEntry(key, config, check))
            pool_checks[pool_name] = entries
        node_entries: list[CheckEntry] | None = None
        if node_checks is not None:
            node_entries = []
            for config in node_checks:
                if config.type not in NODE_TYPES:
                    raise ValueError(f"node_checks: {config.type} cannot check the node")
                key = probe_key(config)
                if any(key == e.key for e in node_entries):
                    continue
                check = self._checks.get(("", key)) or _build_check(
                    config, "node_checks", self.node_id
                )
                checks[("", key)] = check
                node_entries.append(CheckEntry(key, config, check))
        elif self._node_sessions:
            for key, session in self._node_sessions.items():
                checks[("", key)] = session.check

        # Nothing below can fail. Swap in the new sets, then retire what is left over.
        old_sessions = self._sessions
        old_node_sessions = self._node_sessions
        old_checks = self._checks
        self._syncing = True
        try:
            self._pools = {name: pools[name] for name in pool_checks}
            self._pool_checks = pool_checks
            self._checks = checks
            targets: dict[tuple[str, str], Target] = {}
            sessions: dict[tuple, Session] = {}
            for pool_name, entries in pool_checks.items():
                pool = self._pools[pool_name]
                self._listen(pool)
                for backend in pool.backends.values():
                    target = self._build_target(pool_name, pool, backend, entries, old_sessions)
                    targets[(pool_name, backend.id)] = target
                    for session in target.sessions:
                        sessions[session.key] = session
                self._passive.update(pool_name, pool, configs[pool_name].passive)
            self._passive.keep_only(pool_checks)
            self._targets = targets
            self._sessions = sessions
            if node_entries is not None:
                self._node_sessions = {}
                for entry in node_entries:
                    key, config, check = entry.key, entry.config, entry.check
                    session = old_node_sessions.get(key)
                    if session is None:
                        status = UP if Timing.of(config).init_state == UP else CHECKING
                        session = Session(
                            ("", self.node_id, "", key), None, check, config, status, self._wall()
                        )
                    else:
                        session.config = config
                        session.timing = Timing.of(config)
                    self._node_sessions[key] = session
            for target in targets.values():
                self._reconcile(target)
        finally:
            self._syncing = False

        retired = [s for k, s in old_sessions.items() if sessions.get(k) is not s]
        retired += [s for k, s in old_node_sessions.items() if self._node_sessions.get(k) is not s]
        dropped = [c for k, c in old_checks.items() if checks.get(k) is not c]
        self._retire(retired, dropped)
        if self._running:
            for session in self._all_sessions():
                self._spawn(session)

    async def start(self) -> None:
        """Start probing (after `update`). Each session's first probe is spread over
        its first interval, so that a thousand backends are not probed in one burst."""
        if self._running:
            return
        self._running = True
        self._sem = asyncio.Semaphore(self.max_concurrency)
        for session in self._all_sessions():
            self._spawn(session)
        self._passive_task = asyncio.create_task(self._passive.run(), name="health-passive")

    async def stop(self) -> None:
        """Stop every probe, wait for them to end, release client sessions. Backend
        states stay as they are."""
        self._running = False
        passive, self._passive_task = self._passive_task, None
        await cancel_and_wait(*(s.task for s in self._all_sessions()), passive)
        for session in self._all_sessions():
            session.task = None
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for check in self._checks.values():
            await _close_check(check)

    # -- subscribers and queries -------------------------------------------------------

    def subscribe(self, callback: Callable[[HealthEvent], Any]) -> Callable[[], None]:
        """`callback(event)` on every transition, on the loop; it may return an
        awaitable, which is run as a task. Returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def statuses(self, pool: str | None = None, backend: str | None = None) -> list[CheckStatus]:
        """Every probe session (pool checks, then node checks), optionally filtered."""
        result = []
        for session in self._sessions.values():
            target = session.target
            if pool is not None and target.pool_name != pool:
                continue
            if backend is not None and target.backend.id != backend:
                continue
            result.append(self._snapshot(session))
        if pool is None and backend is None:
            result.extend(self._snapshot(s) for s in self._node_sessions.values())
        return result

    def verdict(self, pool: str, backend_id: str) -> BackendState:
        """The state the backend's health calls for (CHECKING, UP or DOWN), whatever its
        admin state: the admin API sets this when an operator ends a drain or a
        maintenance."""
        target = self._targets.get((pool, backend_id))
        if target is None:
            return BackendState.UP
        return self._verdict(target)

    def backend_health(self, pool: str, backend_id: str) -> dict[str, Any]:
        """The admin API's `health` of one backend: verdict, ejection, check summary."""
        detector = self._detectors.get(pool)
        passive = detector.snapshot().get(backend_id) if detector is not None else None
        return {
            "verdict": str(self.verdict(pool, backend_id)),
            "ejected": bool(detector is not None and detector.is_ejected(backend_id)),
            "passive": passive,
            "checks": [
                {"type": s.type, "name": s.name, "status": s.status, "reason": s.last_reason}
                for s in self.statuses(pool, backend_id)
            ],
        }

    def node_status(self) -> NodeHealth:
        checks = tuple(self._snapshot(s) for s in self._node_sessions.values())
        reasons = tuple(f"{c.name}: {c.last_reason}" for c in checks if c.status == DOWN)
        return NodeHealth(healthy=not reasons, reasons=reasons, checks=checks)

    @property
    def node_healthy(self) -> bool:
        """False while any node check is down (a `checking` node check counts as
        healthy: the node does not shed traffic before it knows)."""
        return not any(s.status == DOWN for s in self._node_sessions.values())

    def events(self, limit: int | None = None) -> list[HealthEvent]:
        """The most recent events, newest first."""
        items = list(reversed(self._events))
        return items[:limit] if limit is not None else items

    def detector(self, pool: str) -> PassiveDetector | None:
        return self._detectors.get(pool)

    # -- the data plane's call ---------------------------------------------------------

    def report(self, backend: Backend, ok: bool, status: int | None = None) -> None:
        """A live request to `backend` ended (passive detection). `ok` False on a
        transport error or timeout; `status` the HTTP status when there was one."""
        detector = self._detectors.get(backend.pool_name)
        if detector is not None:
            detector.report(backend, ok, status)

    # -- scheduling math (pure; tests call them) ------------------------------------------

    def base_interval(self, session: Session) -> float:
        """The interval the session's status calls for (`Session.base_interval`)."""
        return session.base_interval()

    def next_delay(self, session: Session) -> float:
        base = self.base_interval(session)
        jitter = session.timing.jitter
        return base * (1.0 + self._rng.uniform(-jitter, jitter)) if jitter else base

    def first_delay(self, session: Session) -> float:
        return self._rng.uniform(0.0, self.base_interval(session))

    # -- probe loop --------------------------------------------------------------------

    def _spawn(self, session: Session) -> None:
        if session.task is None or session.task.done():
            session.task = asyncio.create_task(self._run(session))

    async def _run(self, session: Session) -> None:
        delay = self.first_delay(session)
        while True:
            if delay > 0:
                # Wake-ups snap to a coarse grid, one timer a slot (see wheel.py): the
                # probes of one slot start in one loop iteration.
                session.waiter = self._wheel.sleeper(delay)
                try:
                    await session.waiter
                finally:
                    session.waiter = None
            started = self._clock()
            if self._must_pause(session):
                self._pause(session)
                delay = session.timing.interval
                continue
            if session.paused:
                session.paused = False
                self._paused.discard(session)
            result = await self._probe(session)
            try:
                self._record(session, result)
            except Exception:
                # A failing pool listener must not end this backend's probing for good.
                log.exception("recording a health result for %s failed", session.key[:2])
            delay = max(0.0, self.next_delay(session) - (self._clock() - started))

    async def _probe(self, session: Session) -> CheckResult:
        backend = session.target.backend if session.target is not None else None
        timeout = session.timing.timeout
        assert self._sem is not None
        async with self._sem:
            started = time.perf_counter()
            # The timeout rides the wheel too (asyncio.timeout would arm a timer per
            # probe); it fires at most one grid slot late.
            timer = self._wheel.sleeper(timeout)
            timer.add_done_callback(session.expire)
            session.probing, session.expired = True, False
            try:
                return await session.check.probe(backend)
            except asyncio.CancelledError:
                task = session.task
                if session.expired and task is not None and task.uncancel() == 0:
                    return CheckResult(False, f"timeout after {timeout:g}s", timeout)
                raise  # the scheduler stops (or the probe was cancelled for good)
            except Exception as exc:
                log.exception("health check %s failed unexpectedly", session.check.describe())
                return CheckResult(
                    False,
                    f"check error: {type(exc).__name__}: {exc}",
                    time.perf_counter() - started,
                )
            finally:
                session.probing = False
                timer.cancel()

    def _must_pause(self, session: Session) -> bool:
        target = session.target
        if target is None or target.backend.state != BackendState.MAINT:
            return False
        # The agent that put the backend in maintenance must stay able to end it.
        return not (target.agent_admin == BackendState.MAINT and session.check.type == AGENT_TYPE)

    def _pause(self, session: Session) -> None:
        if session.paused:
            return
        session.paused = True
        self._paused.add(session)
        session.passes = session.fails = 0
        if session.status != CHECKING:
            old, session.status = session.status, CHECKING
            session.last_change = self._wall()
            self._emit_session(session, old, "paused: backend in maintenance", 0.0)

    def _record(self, session: Session, result: CheckResult) -> None:
        """Count one probe result; transition, reconcile, emit. Called on the loop."""
        old = session.status
        new = session.count(result, self._wall())
        target = session.target
        if target is not None and session.check.type == AGENT_TYPE:
            # Before the session takes its new status: an agent's `ready` puts the
            # backend where the verdict of the statuses so far says.
            self._apply_agent(target, session, result)
        session.settle(new)
        if target is not None:
            self._reconcile(target, batch=True)
        if new != old:
            self._emit_session(session, old, result.reason, result.latency)

    def _apply_agent(self, target: Target, session: Session, result: CheckResult) -> None:
        event = target.apply_agent(session, result, self._verdict, self._wall())
        if event is not None:
            self._emit(event)
            if target.backend.state != BackendState.MAINT:
                self._wake_paused(target.pool_name)

    # -- verdicts and backend state ----------------------------------------------------

    def _verdict(self, target: Target) -> BackendState:
        detector = self._detectors.get(target.pool_name)
        return target.verdict(detector is not None and detector.is_ejected(target.backend.id))

    def _reconcile(self, target: Target, *, batch: bool = False) -> None:
        """Make the backend's state follow its verdict unless an admin state holds it.
        With `batch`, the pool is refreshed once at the end of this loop iteration
        (with whatever else changed meanwhile) instead of at once."""
        backend = target.backend
        if backend.state in (BackendState.DRAINING, BackendState.MAINT):
            return
        pool = target.pool
        if backend.id not in pool.backends:
            return
        verdict = self._verdict(target)
        if backend.state == verdict:
            return
        if not batch:
            pool.set_state(backend.id, verdict)
            return
        pool.set_state(backend.id, verdict, refresh=False)
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._refresh_dirty)
        self._dirty[pool.name] = pool

    def _refresh_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for pool in dirty.values():
            pool.refresh()

    # -- membership ----------------------------------------------------------------------

    def _build_target(
        self,
        pool_name: str,
        pool: Pool,
        backend: Backend,
        entries: list[CheckEntry],
        old_sessions: Mapping[tuple, Session],
    ) -> Target:
        old = self._targets.get((pool_name, backend.id))
        if old is None or old.address != backend.address:
            target = Target(pool_name, pool, backend)
            target.install(entries, old_sessions, was_up=False, now=self._wall())
            return target
        # A new check on a backend that is already UP starts `up`: adding a check must
        # not take traffic away.
        was_up = self._verdict(old) == BackendState.UP and (
            bool(old.sessions) or old.backend.state == BackendState.UP
        )
        old.pool, old.backend = pool, backend
        old.install(entries, old_sessions, was_up=was_up, now=self._wall())
        return old

    def _listen(self, pool: Pool) -> None:
        if pool in self._listened:
            return
        self._listened.add(pool)
        pool.add_listener(self._on_pool_refresh)

    def _on_pool_refresh(self, pool: Pool) -> None:
        """Pool listener: backends added or removed at run time (admin API) get or lose
        their sessions; sessions paused for maintenance resume when it ends."""
        # While syncing, the refreshes are our own `set_state` calls: membership is
        # being rebuilt from the pools already.
        if self._syncing or self._pools.get(pool.name) is not pool:
            return
        known = {bid for (pname, bid) in self._targets if pname == pool.name}
        if pool.backends.keys() != known:
            self._sync_pool(pool.name, pool)
        self._wake_paused(pool.name)

    def _sync_pool(self, pool_name: str, pool: Pool) -> None:
        entries = self._pool_checks.get(pool_name, [])
        removed = [
            t
            for (pname, bid), t in self._targets.items()
            if pname == pool_name and bid not in pool.backends
        ]
        added: list[Target] = []
        self._syncing = True
        try:
            for target in removed:
                del self._targets[(pool_name, target.backend.id)]
                for session in target.sessions:
                    self._sessions.pop(session.key, None)
            for backend in list(pool.backends.values()):
                if (pool_name, backend.id) not in self._targets:
                    target = self._build_target(pool_name, pool, backend, entries, {})
                    self._targets[(pool_name, backend.id)] = target
                    for session in target.sessions:
                        self._sessions[session.key] = session
                    added.append(target)
            detector = self._detectors.get(pool_name)
            if detector is not None:
                detector.prune(set(pool.backends))
            for target in added:
                self._reconcile(target)
        finally:
            self._syncing = False
        self._retire([s for t in removed for s in t.sessions], [])
        if self._running:
            for target in added:
                for session in target.sessions:
                    self._spawn(session)

    def _wake_paused(self, pool_name: str) -> None:
        for session in list(self._paused):
            target = session.target
            if (
                target is not None
                and target.pool_name == pool_name
                and not self._must_pause(session)
            ):
                session.wake()

    def _retire(self, sessions: Iterable[Session], checks: Iterable[Check]) -> None:
        tasks = []
        for session in sessions:
            self._paused.discard(session)
            if session.task is not None:
                session.task.cancel()
                tasks.append(session.task)
                session.task = None
        checks = list(checks)
        if not tasks and not checks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not started: nothing runs, and no client session was opened

        async def finish() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            for check in checks:
                await _close_check(check)

        self._keep(loop.create_task(finish()))

    def _all_sessions(self) -> list[Session]:
        return [*self._sessions.values(), *self._node_sessions.values()]

    # -- passive detection -------------------------------------------------------------

    def _on_passive(self, pool_name: str, backend_id: str, ejected: bool, reason: str) -> None:
        target = self._targets.get((pool_name, backend_id))
        if target is not None:
            self._reconcile(target)
        state = target.backend.state if target is not None else None
        self._emit(
            HealthEvent(
                time=self._wall(),
                pool=pool_name,
                backend=backend_id,
                check="passive",
                old=UP if ejected else "ejected",
                new="ejected" if ejected else UP,
                reason=reason,
                latency=0.0,
                state=str(state) if state else None,
                name="passive",
            )
        )

    def tick_passive(self) -> float | None:
        """Re-admit every backend whose ejection is over; seconds until the next ends."""
        return self._passive.tick()

    # -- events ------------------------------------------------------------------------

    def _snapshot(self, session: Session) -> CheckStatus:
        return session.snapshot(self.node_id)

    def _emit_session(self, session: Session, old: str, reason: str, latency: float) -> None:
        event = session.event(old, reason, latency, self.node_id, self._wall())
        level = logging.WARNING if session.status == DOWN else logging.INFO
        log.log(
            level,
            "health %s/%s %s: %s -> %s (%s)",
            event.pool or "node",
            event.backend,
            event.name,
            old,
            session.status,
            reason,
        )
        self._emit(event)

    def _emit(self, event: HealthEvent) -> None:
        self._events.append(event)
        for callback in list(self._subscribers):
            try:
                outcome = callback(event)
                if inspect.isawaitable(outcome):
                    self._keep(asyncio.ensure_future(outcome))
            except Exception:
                log.exception("health event subscriber %r failed", callback)

    def _keep(self, task: asyncio.Future[Any]) -> None:
        """Hold a background task until it ends (`stop` waits for them)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _build_check(config: Any, where: str, node_id: str) -> Check:
    try:
        check = create_check(config)
    except Exception as exc:
        raise ValueError(f"{where}: {getattr(config, 'type', '?')}: {exc}") from exc
    check.bind(node_id)
    return check


async def _close_check(check: Check) -> None:
    try:
        await check.close()
    except Exception:
        log.exception("closing health check %s failed", check.describe())
