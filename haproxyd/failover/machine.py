"""The failover state machine: per pool, which backends are active, and why.

One `FailoverMachine` per node, in the process that owns health (the master with
`workers: N > 1`; workers only mirror the resulting selectable set). It installs itself
as each pool's active filter (`Pool.set_active_filter`), so every refresh of a pool (a
health verdict, a drain, a weight, a membership change: all of them already refresh
the pool) re-evaluates that pool synchronously, inside the same refresh, before the
balancer rebuilds and before the change is pushed to workers: there is never an
intermediate selectable set for a request to see. Timers (a failback hold or a flap
hold that ends) come from `tick()`, which the daemon's loop drives (`start()`); tests
drive it with a fake clock.

Each evaluation:
1. observes backend states against what it saw last: up/down transitions feed flap
   damping (a backend with `flap_threshold` transitions within `flap_window` is held
   out of the active set for `flap_hold`; if it flapped that much again during the
   hold, or within `flap_hold_max` after it, the next hold doubles, up to
   `flap_hold_max`; a held backend still serves if nothing else is healthy);
2. asks the pool's strategy (`haproxyd/failover/<strategy>.py`) for a `Choice`;
3. applies panic mode on top (Envoy's panic threshold): when fewer than
   `panic_threshold` % of the pool's backends with a known verdict are healthy, the
   active set becomes every eligible backend, down ones included (`PanicSet`), or
   nothing with `on_panic: fail`;
4. commits a new `Decision` (version + 1) when the active set, panic or the strategy's
   state changed, records an event when traffic moves, and hands the decision to the
   optional `publish` callback (the cluster seam, issue 8).

Cluster seam: in follower mode (`set_follower(True)`) the machine does not decide for
pools whose strategy the leader decides (active_passive, multi_active, manual); it
routes by the decisions given to `apply_decision` instead. active_active pools stay
node-local. Decisions during start-up (until the pool serves and every backend has had
its first health verdict) are made but not recorded as events: a daemon starting is
not a failover.

Cost: O(n log n) per evaluation of an n-backend pool, only on change; nothing per
request (the pool's selectable set and retry fallback are precomputed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from haproxyd.balancer.state import Backend, BackendState, PanicSet, Pool, default_selectable
from haproxyd.failover.base import Choice, Decision, Strategy, TriggerRefused, View, ranked
from haproxyd.failover.base import create as create_strategy
from haproxyd.tasks import cancel_and_wait

if TYPE_CHECKING:
    from haproxyd.config.schema import FailoverConfig
    from haproxyd.failover.events import EventLog, FailoverEvent

log = logging.getLogger("haproxyd.failover")

MAX_SLEEP = 1.0  # the timer loop looks at least this often (a backstop for missed wakes)
MAX_LEVEL = 16  # flap hold doublings counted (the hold is capped long before)
_ADMIN_STATES = (BackendState.DRAINING, BackendState.MAINT)


@dataclass(slots=True)
class _Track:
    """What the machine remembers about one backend (never read per request)."""

    backend: Backend
    health: str | None  # "up" | "down" | None: no verdict seen yet
    ready_since: float | None  # monotonic time it became UP (None while not UP)
    changes: deque[float] = field(default_factory=deque)  # up/down transitions (times)
    held_until: float = 0.0  # flap damping: held out of the active set until then
    level: int = 0  # flap holds in a row (the hold doubles with each)
    released_at: float = -math.inf  # end of the last flap hold


@dataclass(slots=True)
class _PoolState:
    name: str
    pool: Pool
    settings: FailoverConfig
    strategy: Strategy
    decision: Decision
    tracks: dict[str, _Track] = field(default_factory=dict)
    due: float | None = None  # re-evaluate at this monotonic time
    settled: bool = False  # start-up is over (see `_commit`): changes are events from now
    reconfigured: str | None = None  # a reload changed the strategy or its settings


class FailoverMachine:
    """Decides the active set of every pool (see the module docstring).

    All methods run on the event loop of the process that owns the pools. `clock` is
    monotonic seconds (holds, timers), `wall` epoch seconds (`Decision.since`);
    `publish(decision)` is called for every new decision this node makes for a pool
    whose strategy the cluster leader decides; it must not refresh pools itself.
    """

    def __init__(
        self,
        events: EventLog,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        publish: Callable[[Decision], None] | None = None,
    ) -> None:
        self.events = events
        self.clock = clock
        self.wall = wall
        self.publish = publish
        # Health as the cluster sees it (issue 8's `health_consensus: majority`):
        # `verdicts(pool, backend_id)` -> "up" | "down" | None (None: this node's own
        # verdict). Consulted only for pools this node decides as the leader.
        self.verdicts: Callable[[str, str], str | None] | None = None
        self._pools: dict[str, _PoolState] = {}
        self._follower = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deferred = False  # see `deferred`

    # -- wiring (daemon: start and every reload) ------------------------------------

    def attach(self, pools: Mapping[str, Pool], settings: Mapping[str, FailoverConfig]) -> None:
        """Take charge of `pools` (all of them: pools not named here are forgotten).
        A pool seen before keeps its decision, flap history and timers; an operator's
        override is dropped only when the pool's `failover:` section changed, and a
        change of strategy starts the new strategy from the current active set."""
        states: dict[str, _PoolState] = {}
        for name, pool in pools.items():
            config = settings[name]
            st = self._pools.get(name)
            if st is None:
                decision = Decision(name, config.strategy, (), 0, "initial", self.wall())
                st = _PoolState(name, pool, config, create_strategy(config.strategy), decision)
            else:
                if st.strategy.name != config.strategy:
                    st.reconfigured = f"strategy {st.strategy.name} -> {config.strategy}"
                    st.strategy = create_strategy(config.strategy)
                    st.decision = replace(st.decision, strategy=config.strategy, state={})
                elif st.settings != config:
                    st.reconfigured = "failover settings changed"
                    st.decision = replace(
                        st.decision, state=Strategy.without_overrides(st.decision.state)
                    )
                st.settings = config
                st.pool = pool
            states[name] = st
        self._pools = states
        for st in states.values():
            st.pool.set_active_filter(self._rule)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """For a reload: while the pools are rebuilt and health gives new backends their
        first state, keep the current decisions and decide nothing. A backend re-added
        by the file is UP for the moment before health marks it `checking`, and deciding
        on that would log and record a change and its reverse in one millisecond.
        `attach` afterwards decides once, on the settled states."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            delay = self.tick()
            self._wake.clear()
            timeout = MAX_SLEEP if delay is None else min(MAX_SLEEP, max(0.005, delay))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def tick(self) -> float | None:
        """Re-evaluate the pools whose timer is due; seconds until the next timer."""
        now = self.clock()
        for st in list(self._pools.values()):
            if st.due is not None and st.due <= now:
                st.due = None
                st.pool.refresh()
        return self.next_delay()

    def next_delay(self) -> float | None:
        dues = [st.due for st in self._pools.values() if st.due is not None]
        return max(0.0, min(dues) - self.clock()) if dues else None

    # -- reading (admin API, status page, tests) -------------------------------------

    def decision(self, pool: str) -> Decision | None:
        st = self._pools.get(pool)
        return st.decision if st is not None else None

    def decisions(self) -> dict[str, Decision]:
        return {name: st.decision for name, st in self._pools.items()}

    def describe(self, pool: str) -> dict[str, Any] | None:
        """The decision with what the admin API shows beside it."""
        st = self._pools.get(pool)
        if st is None:
            return None
        now = self.clock()
        fallback = st.pool.retry_fallback
        out = st.decision.to_dict()
        out.update(
            mode=self._mode(st),
            held=sorted(i for i, t in st.tracks.items() if t.held_until > now),
            fallback=fallback.id if fallback is not None else None,
        )
        return out

    @property
    def follower(self) -> bool:
        return self._follower

    # -- operator (admin API) ----------------------------------------------------------

    def trigger(
        self,
        pool: str,
        *,
        target: str | None = None,
        backend: str | None = None,
        reason: str = "manual failover",
        source: str = "admin",
    ) -> dict[str, Any]:
        """A forced failover of `pool` (`target`: "backup", "primary" or None = the
        other side; `backend`: a specific backend, where the strategy allows it).
        Raises KeyError for an unknown pool and `TriggerRefused` (nothing changed) when
        it cannot be done. Returns what the pool serves now and the event."""
        st = self._pools[pool]
        if self._follower and st.strategy.leader_decides:
            raise TriggerRefused(
                f"pool {pool!r} follows the cluster leader's decisions: trigger it on the leader"
            )
        if target not in (None, "backup", "primary"):
            raise TriggerRefused(f"to: {target!r} is not backup or primary")
        now = self.clock()
        self._observe(st, st.pool, now)
        view = self._view(st, st.pool, now, include_held=False)
        choice = st.strategy.trigger(view, st.decision, to=target, backend=backend)
        event = self._commit(st, view, choice, [], trigger=(reason, source))
        st.pool.refresh()
        assert event is not None
        return {
            "pool": pool,
            "action": event.kind,
            "active": [b.id for b in st.pool.selectable],
            "event": event.to_dict(),
            "decision": self.describe(pool),
        }

    # -- cluster seam ------------------------------------------------------------------

    def set_follower(self, follower: bool) -> None:
        """Follower: stop deciding for leader-decided pools and route by `apply_decision`.
        Back to leader: decide again, starting from the last applied decisions."""
        if follower == self._follower:
            return
        self._follower = follower
        if not follower:
            for st in list(self._pools.values()):
                if st.strategy.leader_decides:
                    st.pool.refresh()

    def apply_decision(self, decision: Decision, *, ordered: bool = False) -> bool:
        """Route `pool` by a decision made elsewhere (the cluster leader's). Ignored
        (False) for an unknown pool, another strategy (the configs differ until config
        sync catches up) or a version older than the one in force, unless `ordered`:
        the caller ordered the decisions itself (the cluster: by term, then version,
        since a new leader's versions need not exceed what a node decided alone)."""
        st = self._pools.get(decision.pool)
        if st is None or decision.strategy != st.strategy.name:
            return False
        old = st.decision
        if decision.version < old.version and not ordered:
            return False
        st.decision = decision
        if decision.active != old.active or decision.panic != old.panic:
            if st.settled or old.active:
                self._event(st, decision, old, decision.kind, None, source="leader")
            st.settled = st.settled or bool(decision.active)
        st.pool.refresh()
        return True

    # -- the active filter (runs inside Pool.refresh) --------------------------------

    def _rule(self, pool: Pool) -> tuple[Backend, ...]:
        st = self._pools.get(pool.name)
        if st is None:
            return default_selectable(pool.backends.values())
        now = self.clock()
        if self._deferred:
            # Mid-reload: serve the current decision; `attach` decides once at the end.
            return self._chosen(st, pool, None)
        transitions = self._observe(st, pool, now)
        view = self._view(st, pool, now, include_held=False)
        due: float | None = None
        if self._mode(st) == "follower":
            self._note_health(st, transitions, None)
        else:
            due = self._decide(st, pool, now, view, transitions)
        holds = [t.held_until for t in st.tracks.values() if t.held_until > now]
        dues = [d for d in (due, min(holds) if holds else None) if d is not None]
        st.due = min(dues) if dues else None
        if st.due is not None:
            self._wake.set()
        return self._chosen(st, pool, view)

    def _chosen(self, st: _PoolState, pool: Pool, view: View | None) -> tuple[Backend, ...]:
        """The pool's selectable set under the current decision (and its retry
        fallback, the next in line, when one backend serves). `view` None: mid-reload,
        the next in line stays the one the pool had."""
        decision = st.decision
        backends = pool.backends
        chosen = tuple(backends[i] for i in decision.active if i in backends)
        if decision.panic:
            return PanicSet(chosen)
        if len(chosen) == 1:
            if view is None:
                previous = st.pool.retry_fallback
                fallback = previous.id if previous is not None else None
            else:
                fallback = st.strategy.fallback(view, decision.active)
            pool.retry_fallback = backends.get(fallback) if fallback is not None else None
        return chosen

    def _mode(self, st: _PoolState) -> str:
        if not st.strategy.leader_decides:
            return "local"
        return "follower" if self._follower else "leader"

    def _observe(self, st: _PoolState, pool: Pool, now: float) -> list[tuple[str, str, str]]:
        """Compare backend states with what was seen last; count flaps; end holds.
        Returns the up/down transitions (id, old, new)."""
        transitions: list[tuple[str, str, str]] = []
        tracks = st.tracks
        for backend_id, backend in pool.backends.items():
            state = self._state(st, backend)
            health = _health(state)
            track = tracks.get(backend_id)
            if track is None or track.backend is not backend:
                ready = now if state == BackendState.UP else None
                tracks[backend_id] = _Track(backend, health, ready)
                continue
            if state == BackendState.UP:
                if track.ready_since is None:
                    track.ready_since = now
            else:
                track.ready_since = None
            if health is not None and health != track.health:
                if track.health is not None:
                    transitions.append((backend_id, track.health, health))
                    self._count_flap(st, backend_id, track, now)
                track.health = health
        for gone in [i for i in tracks if i not in pool.backends]:
            del tracks[gone]
        for backend_id, track in tracks.items():
            if track.held_until and now >= track.held_until:
                self._end_hold(st, backend_id, track, now)
        return transitions

    def _state(self, st: _PoolState, backend: Backend) -> BackendState:
        """The backend's state as this evaluation judges it: the local one, or for a
        pool decided as leader with cluster verdicts, the cluster's up/down."""
        state = backend.state
        if self.verdicts is None or state in _ADMIN_STATES or self._mode(st) != "leader":
            return state
        verdict = self.verdicts(st.name, backend.id)
        if verdict == "up":
            return BackendState.UP
        if verdict == "down":
            return BackendState.DOWN
        return state

    def _view(self, st: _PoolState, pool: Pool, now: float, *, include_held: bool) -> View:
        backends = pool.backends
        tracks = st.tracks
        states = {i: self._state(st, b) for i, b in backends.items()}
        eligible = tuple(
            i
            for i, b in backends.items()
            if b.state not in _ADMIN_STATES and b.effective_weight > 0
        )
        healthy = frozenset(
            i
            for i in eligible
            if states[i] == BackendState.UP and (include_held or tracks[i].held_until <= now)
        )
        unknown = frozenset(
            i for i in eligible if states[i] == BackendState.CHECKING and tracks[i].health is None
        )
        ready_since = {}
        for i in healthy:
            track = tracks[i]
            since = track.ready_since if track.ready_since is not None else now
            ready_since[i] = max(since, track.released_at)
        return View(
            pool=pool.name,
            now=now,
            settings=st.settings,
            backends=backends,
            eligible=eligible,
            healthy=healthy,
            unknown=unknown,
            ranked=ranked(backends),
            ready_since=ready_since,
        )

    def _decide(
        self,
        st: _PoolState,
        pool: Pool,
        now: float,
        view: View,
        transitions: list[tuple[str, str, str]],
    ) -> float | None:
        """One leader-side evaluation; returns the strategy's timer, if any."""
        current = st.decision
        choice = st.strategy.decide(view, current)
        if not choice.active:
            relaxed = self._view(st, pool, now, include_held=True)
            if relaxed.healthy != view.healthy:
                # Only flap-held backends are healthy: a flapping backend beats none.
                view = relaxed
                choice = st.strategy.decide(view, current)
                choice = replace(
                    choice,
                    reason=f"{choice.reason} (flap hold overridden: no other healthy backend)",
                )
        self._commit(st, view, choice, transitions)
        return choice.due

    def _panic(self, st: _PoolState, view: View) -> tuple[bool, str]:
        threshold = st.settings.panic_threshold
        if threshold <= 0:
            return False, ""
        known = [i for i in view.eligible if i not in view.unknown]
        if not known:
            return False, ""
        healthy = sum(1 for i in known if i in view.healthy)
        share = 100.0 * healthy / len(known)
        if share >= threshold:
            return False, f"{healthy}/{len(known)} healthy ({share:.0f}%)"
        return True, (
            f"{healthy}/{len(known)} healthy ({share:.0f}%) < panic_threshold {threshold:g}%"
        )

    def _commit(
        self,
        st: _PoolState,
        view: View,
        choice: Choice,
        transitions: list[tuple[str, str, str]],
        *,
        trigger: tuple[str, str] | None = None,
    ) -> FailoverEvent | None:
        old = st.decision
        panic, panic_reason = self._panic(st, view)
        if panic:
            if st.settings.on_panic == "fail":
                active: tuple[str, ...] = ()
                how = "on_panic: fail: no backend serves"
            else:
                active = st.strategy.panic_scope(view, old)
                how = f"balancing over all {len(active)} eligible backends"
            reason = f"panic: {panic_reason}: {how}"
        else:
            active = choice.active
            reason = choice.reason
        if transitions:
            reason = ", ".join(f"{i} {a} -> {b}" for i, a, b in transitions) + ": " + reason
        reconfigured, st.reconfigured = st.reconfigured, None
        if reconfigured:
            reason = f"reload: {reconfigured}: {reason}"
        moved = active != old.active or panic != old.panic
        state = dict(choice.state)
        # Start-up ends once the pool serves and every backend has had its first verdict;
        # the change that ends it is still part of it (not an event).
        settled = st.settled
        st.settled = settled or (bool(active) and not view.unknown)
        if not moved and state == dict(old.state) and trigger is None:
            self._note_health(st, transitions, None)
            return None
        if panic and not old.panic:
            kind = "panic"
        elif old.panic and not panic:
            kind = "panic_end"
        elif moved and not active:
            kind = "outage"
        elif moved and not old.active:
            kind = "recovery"
        elif reconfigured:
            kind = "config"
        else:
            kind = choice.kind
        if trigger is not None:
            kind = choice.kind
            reason = trigger[0]
        new = Decision(
            pool=st.name,
            strategy=st.strategy.name,
            active=active,
            version=old.version + 1,
            reason=reason,
            since=self.wall() if moved else old.since,
            kind=kind,
            panic=panic,
            state=state,
        )
        st.decision = new
        event = None
        if trigger is not None:
            event = self._event(
                st,
                new,
                old,
                kind,
                choice.backend,
                manual=True,
                source=trigger[1],
                why=choice.reason,
            )
        elif moved and settled:
            if st.strategy.name == "manual" and transitions:
                event = self._note_health(st, transitions, (new, old))
            else:
                event = self._event(st, new, old, kind, choice.backend)
        else:
            self._note_health(st, transitions, None)
        if self.publish is not None and st.strategy.leader_decides:
            try:
                self.publish(new)
            except Exception:
                log.exception("failover: publishing the decision for pool %s failed", st.name)
        return event

    def _event(
        self,
        st: _PoolState,
        new: Decision,
        old: Decision,
        kind: str,
        backend: str | None,
        **extra: Any,
    ) -> FailoverEvent:
        level = logging.WARNING if kind in ("failover", "outage", "panic") else logging.INFO
        log.log(
            level,
            "failover %s: %s %s -> %s (%s)",
            st.name,
            kind,
            list(old.active),
            list(new.active),
            new.reason,
        )
        return self.events.append(
            kind,
            st.name,
            backend,
            new.reason,
            strategy=st.strategy.name,
            version=new.version,
            active=list(new.active),
            previous=list(old.active),
            panic=new.panic,
            **extra,
        )

    def _note_health(
        self,
        st: _PoolState,
        transitions: list[tuple[str, str, str]],
        decided: tuple[Decision, Decision] | None,
    ) -> FailoverEvent | None:
        """manual pools: every health transition is an event an operator must see
        (`needs_operator`); the first carries the decision it caused, if any."""
        if st.strategy.name != "manual" or not transitions:
            return None
        first = None
        decision = st.decision
        for backend_id, old, new in transitions:
            details: dict[str, Any] = {
                "strategy": st.strategy.name,
                "needs_operator": True,
                "state": new,
                "serving": list(decision.active),
            }
            if decided is not None and first is None:
                details.update(
                    version=decided[0].version,
                    active=list(decided[0].active),
                    previous=list(decided[1].active),
                )
            log.warning(
                "failover %s: %s %s -> %s: manual pool, traffic stays on %s: operator needed",
                st.name,
                backend_id,
                old,
                new,
                list(decision.active),
            )
            event = self.events.append(
                "health",
                st.name,
                backend_id,
                f"{backend_id} {old} -> {new}: manual failover: traffic does not move by "
                f"itself (serving: {', '.join(decision.active) or 'nothing'})",
                **details,
            )
            first = first or event
        return first

    # -- flap damping ------------------------------------------------------------------

    def _count_flap(self, st: _PoolState, backend_id: str, track: _Track, now: float) -> None:
        settings = st.settings
        changes = track.changes
        changes.append(now)
        while changes and changes[0] <= now - settings.flap_window:
            changes.popleft()
        if settings.flap_hold <= 0 or track.held_until:
            return  # damping off, or already held (the count decides at the hold's end)
        if len(changes) >= settings.flap_threshold:
            self._start_hold(st, backend_id, track, now, f"{len(changes)} state changes")

    def _start_hold(
        self, st: _PoolState, backend_id: str, track: _Track, now: float, why: str
    ) -> None:
        settings = st.settings
        if now - track.released_at > settings.flap_hold_max:
            track.level = 0  # quiet for long enough: forgiven
        else:
            track.level = min(MAX_LEVEL, track.level + 1)
        hold = min(settings.flap_hold * 2**track.level, settings.flap_hold_max)
        track.held_until = now + hold
        track.changes.clear()
        log.warning(
            "failover %s: %s flapping (%s): held out for %gs", st.name, backend_id, why, hold
        )
        self.events.append(
            "flap_hold",
            st.name,
            backend_id,
            f"{backend_id} is flapping ({why} within {settings.flap_window:g}s): "
            f"held out of the active set for {hold:g}s",
            strategy=st.strategy.name,
            hold=hold,
            level=track.level,
        )

    def _end_hold(self, st: _PoolState, backend_id: str, track: _Track, now: float) -> None:
        settings = st.settings
        changes = track.changes
        while changes and changes[0] <= now - settings.flap_window:
            changes.popleft()
        track.released_at = now
        if settings.flap_hold > 0 and len(changes) >= settings.flap_threshold:
            self._start_hold(st, backend_id, track, now, f"still flapping: {len(changes)} changes")
            return
        track.held_until = 0.0
        changes.clear()  # what happened during the hold has been judged: a fresh count
        self.events.append(
            "flap_release",
            st.name,
            backend_id,
            f"{backend_id} flap hold ended",
            strategy=st.strategy.name,
            level=track.level,
        )


def _health(state: BackendState) -> str | None:
    """The health verdict a state shows; None for states that say nothing new
    (checking after maintenance, draining, maint keep the last verdict)."""
    if state == BackendState.UP:
        return "up"
    if state == BackendState.DOWN:
        return "down"
    return None


__all__ = ["Decision", "FailoverMachine", "TriggerRefused"]
