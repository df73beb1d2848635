"""One probe session per (backend, check): rise/fall counting and the verdicts.

A `Session` counts the results of one check on one backend (or of one node check) and
says which status (`checking`, `up`, `down`) they call for: HAProxy's `check->health`
between rise and fall, Envoy's `ActiveHealthCheckSession`. A `Target` is one backend
with its sessions: its verdict combines them (any down: DOWN; any checking: CHECKING;
else UP) with passive ejection, and it remembers what an agent check asked for. The
records the admin API and the failover machine read (`HealthEvent`, `CheckStatus`,
`NodeHealth`) are here too. When to probe, and what follows a verdict, is the
scheduler's (scheduler.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from haproxyd.balancer.state import Backend, BackendState, Pool
from haproxyd.health.base import Check, CheckResult

if TYPE_CHECKING:
    from haproxyd.config.sections.health import CheckBase

CHECKING, UP, DOWN = "checking", "up", "down"
AGENT_TYPE = "system_metrics"

log = logging.getLogger("haproxyd.health")


@dataclasses.dataclass(frozen=True, slots=True)
class HealthEvent:
    """A change of health: a check's status, a passive ejection, an agent's request.

    `check` is the check type, or "passive" for outlier detection. `old`/`new` are
    session statuses (checking/up/down), "ejected"/"up" for passive events, or backend
    states for an agent's drain/maint/ready. `state` is the backend's state after the
    event (None for node checks, where `node` is True, `pool` is "" and `backend` is
    the node id). `time` is wall-clock seconds since the epoch.
    """

    time: float
    pool: str
    backend: str
    check: str
    old: str
    new: str
    reason: str
    latency: float
    state: str | None = None
    name: str = ""
    node: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class CheckStatus:
    """A snapshot of one probe session, for the admin API and the status page."""

    pool: str
    backend: str
    address: str
    type: str
    name: str
    status: str  # checking | up | down
    state: str | None  # the backend's state (None for node checks)
    last_ok: bool | None
    last_reason: str
    last_latency: float
    last_check: float | None  # wall clock
    last_change: float  # wall clock
    consecutive_passes: int
    consecutive_fails: int
    checks_total: int
    failures_total: int
    paused: bool
    interval: float
    node: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeHealth:
    """The node's own health: False when any node check is down."""

    healthy: bool
    reasons: tuple[str, ...]
    checks: tuple[CheckStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """The timing fields of a check config, read once per (re)configuration."""

    interval: float
    timeout: float
    rise: int
    fall: int
    down_interval: float | None
    fast_interval: float | None
    jitter: float
    init_state: str

    @classmethod
    def of(cls, config: CheckBase) -> Timing:
        # The fields are CheckBase's own (a test holds the two together).
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


class CheckEntry:
    """One configured check of a pool (or of the node): its identity for reloads
    (`base.probe_key`), its config, and the check object that probes."""

    __slots__ = ("check", "config", "key")

    def __init__(self, key: str, config: CheckBase, check: Check) -> None:
        self.key = key
        self.config = config
        self.check = check


class Target:
    """One backend of one pool, with its sessions and what the agent decided."""

    __slots__ = ("address", "agent_admin", "backend", "pool", "pool_name", "sessions")

    def __init__(self, pool_name: str, pool: Pool, backend: Backend) -> None:
        self.pool_name = pool_name
        self.pool = pool
        self.backend = backend
        self.address = backend.address
        self.sessions: list[Session] = []
        self.agent_admin: BackendState | None = None  # DRAINING/MAINT set by the agent

    def install(
        self,
        entries: list[CheckEntry],
        old_sessions: Mapping[tuple, Session],
        *,
        was_up: bool,
        now: float,
    ) -> None:
        """One session per check of `entries`: a session of `old_sessions` that probes
        the same thing on the same address is kept (status, counters, history; new
        timing), a new one starts `checking`, or `up` when `was_up` or `init_state`
        says so."""
        backend = self.backend
        sessions = []
        for entry in entries:
            skey = (self.pool_name, backend.id, backend.address, entry.key)
            session = old_sessions.get(skey)
            if session is not None:
                session.config, session.check, session.target = entry.config, entry.check, self
                session.timing = Timing.of(entry.config)
            else:
                timing = Timing.of(entry.config)
                status = UP if was_up or timing.init_state == UP else CHECKING
                session = Session(skey, self, entry.check, entry.config, status, now)
            sessions.append(session)
        self.sessions = sessions

    def verdict(self, ejected: bool) -> BackendState:
        """What the backend's health calls for: DOWN when passive detection ejected it
        or any check is down, else CHECKING while any check has no verdict, else UP."""
        if ejected:
            return BackendState.DOWN
        verdict = BackendState.UP
        for session in self.sessions:
            if session.status == DOWN:
                return BackendState.DOWN
            if session.status == CHECKING:
                verdict = BackendState.CHECKING
        return verdict

    def apply_agent(
        self,
        session: Session,
        result: CheckResult,
        verdict: Callable[[Target], BackendState],
        now: float,
    ) -> HealthEvent | None:
        """An agent check's result (HAProxy agent-check semantics): its weight, as a
        share of the configured one, and its admin request; the event when the request
        changed the backend's state. `verdict` is where `ready` puts the backend."""
        backend, pool = self.backend, self.pool
        if result.weight_percent is not None and backend.id in pool.backends:
            weight = backend.weight * result.weight_percent // 100
            if result.weight_percent > 0 and backend.weight > 0:
                weight = max(1, weight)
            if weight != backend.effective_weight:
                log.info(
                    "%s/%s: agent sets weight %d (%d%%)",
                    self.pool_name,
                    backend.id,
                    weight,
                    result.weight_percent,
                )
                pool.set_weight(backend.id, weight, effective_only=True)
        old = backend.state
        wanted = self.agent_request(result.admin_state)
        if wanted is None:
            return None
        ready = wanted == BackendState.CHECKING  # `ready`: where the verdict says
        pool.set_state(backend.id, verdict(self) if ready else wanted)
        return HealthEvent(
            time=now,
            pool=self.pool_name,
            backend=backend.id,
            check=AGENT_TYPE,
            old=str(old),
            new=str(backend.state),
            reason=f"agent requested {result.admin_state}",
            latency=result.latency,
            state=str(backend.state),
            name=session.check.describe(),
        )

    def agent_request(self, request: str | None) -> BackendState | None:
        """The admin state an agent's `drain`/`maint`/`ready` asks for (HAProxy
        agent-check semantics), recording that the agent holds it; None when it asks
        nothing or nothing changes. `ready` answers CHECKING: the caller puts the
        backend where its verdict says. An operator's drain or maint outranks the
        agent: a state the agent did not set is not the agent's to lift."""
        backend = self.backend
        if self.agent_admin is not None and backend.state != self.agent_admin:
            self.agent_admin = None  # an operator changed the state since: theirs now
        if request is None or backend.id not in self.pool.backends:
            return None
        old = backend.state
        if request == "drain" and old not in (BackendState.DRAINING, BackendState.MAINT):
            self.agent_admin = BackendState.DRAINING
            return BackendState.DRAINING
        if request == "maint" and old != BackendState.MAINT:
            if old == BackendState.DRAINING and self.agent_admin is None:
                return None  # the operator's drain stands; the agent cannot override it
            self.agent_admin = BackendState.MAINT
            return BackendState.MAINT
        if request == "ready" and self.agent_admin is not None:
            self.agent_admin = None
            return BackendState.CHECKING
        return None


class Session:
    """The probe loop state of one (backend, check), or of one node check."""

    __slots__ = (
        "check",
        "checks_total",
        "config",
        "expired",
        "fails",
        "failures_total",
        "key",
        "last_change",
        "last_check",
        "last_latency",
        "last_ok",
        "last_reason",
        "passes",
        "paused",
        "probing",
        "status",
        "target",
        "task",
        "timing",
        "waiter",
    )

    def __init__(
        self,
        key: tuple,
        target: Target | None,
        check: Check,
        config: CheckBase,
        status: str,
        now: float,
    ) -> None:
        self.key = key
        self.target = target
        self.check = check
        self.config = config
        self.timing = Timing.of(config)
        self.status = status
        self.passes = 0
        self.fails = 0
        self.last_ok: bool | None = None
        self.last_reason = "not checked yet"
        self.last_latency = 0.0
        self.last_check: float | None = None
        self.last_change = now
        self.checks_total = 0
        self.failures_total = 0
        self.paused = False
        self.task: asyncio.Task | None = None
        self.waiter: asyncio.Future | None = None
        self.probing = False  # a probe is running in `task`
        self.expired = False  # and its timeout cancelled it

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def expire(self, timer: asyncio.Future[None]) -> None:
        """The probe's timeout (a wheel sleeper) is due: cancel the probe, if it is
        still the one running."""
        if not timer.cancelled() and self.probing and self.task is not None:
            self.expired = True
            self.task.cancel()

    def base_interval(self) -> float:
        """HAProxy's rule: `down_interval` when fully down, `fast_interval` while going
        up or down (and while checking), `interval` when fully up."""
        timing = self.timing
        if self.status == UP and self.fails == 0:
            return timing.interval
        if self.status == DOWN and self.passes == 0:
            return timing.down_interval or timing.interval
        return timing.fast_interval or timing.interval

    def count(self, result: CheckResult, now: float) -> str:
        """Count one probe result (at wall-clock `now`); the status the counters call
        for: a first result decides at once, then `fall` consecutive failures take an
        up session down and `rise` consecutive passes bring a down one up. The caller
        sets it (`settle`), once whatever depends on the old status is done."""
        self.checks_total += 1
        self.last_ok = result.ok
        self.last_reason = result.reason
        self.last_latency = result.latency
        self.last_check = now
        if result.ok:
            self.passes += 1
            self.fails = 0
        else:
            self.fails += 1
            self.passes = 0
            self.failures_total += 1
        if self.status == CHECKING:
            return UP if result.ok else DOWN
        if self.status == UP and self.fails >= self.timing.fall:
            return DOWN
        if self.status == DOWN and self.passes >= self.timing.rise:
            return UP
        return self.status

    def settle(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.last_change = self.last_check if self.last_check is not None else 0.0

    def snapshot(self, node_id: str) -> CheckStatus:
        target = self.target
        return CheckStatus(
            pool=target.pool_name if target else "",
            backend=target.backend.id if target else node_id,
            address=target.backend.address if target else "",
            type=self.check.type,
            name=self.check.describe(),
            status=self.status,
            state=str(target.backend.state) if target else None,
            last_ok=self.last_ok,
            last_reason=self.last_reason,
            last_latency=self.last_latency,
            last_check=self.last_check,
            last_change=self.last_change,
            consecutive_passes=self.passes,
            consecutive_fails=self.fails,
            checks_total=self.checks_total,
            failures_total=self.failures_total,
            paused=self.paused,
            interval=self.base_interval(),
            node=target is None,
        )

    def event(self, old: str, reason: str, latency: float, node_id: str, now: float) -> HealthEvent:
        """The event of this session's change from `old` to its status."""
        target = self.target
        return HealthEvent(
            time=now,
            pool=target.pool_name if target else "",
            backend=target.backend.id if target else node_id,
            check=self.check.type,
            old=old,
            new=self.status,
            reason=reason,
            latency=latency,
            state=str(target.backend.state) if target else None,
            name=self.check.describe(),
            node=target is None,
        )
