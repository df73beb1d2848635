"""The failover strategy interface, the decision record, and what a strategy sees.

A strategy is stateless: `decide(view, current)` maps what the machine sees of a pool
(a `View`: health, order, time) and the decision in force to a `Choice`, and
`trigger(...)` does the same for an operator's forced failover (or raises
`TriggerRefused`). Whatever a strategy must remember between decisions (the backend it
made active, a pinned backend, a manual pool's designated set, the groups it took out)
travels in `Decision.state`, so a `Decision` is the whole truth about a pool: the
machine can hand it to a cluster publisher, and another node can apply it and, if it
becomes the leader, carry on from it (issue 8's seam).

One module per strategy registers itself here by its config name
(`failover.strategy`), like the balancer algorithms do (HAProxy's `lb_ops` tables,
Traefik's failover handler as one more balancer). Complexity: a decision is O(n log n)
in the pool's backends (the ranking sort), and only runs when something changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.schema import FailoverConfig

# Keys of `Decision.state` that hold an operator's override. A reload that changes the
# pool's `failover:` section drops them: the file is the operator's newer word.
OVERRIDE_KEYS = ("pinned", "designated", "forced")


class TriggerRefused(ValueError):
    """A forced failover that cannot be done (no healthy target, already there, not
    meaningful for the strategy). Nothing was changed; the admin API answers 409."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Which backends of a pool take traffic, and why. Immutable; a new one per change.

    `active` lists the backend ids in order; `version` grows by one per decision of the
    pool (a follower ignores a published decision older than the one it has); `since` is
    the wall-clock time the active set last changed; `kind` what made it (initial,
    failover, failback, update, outage, recovery, panic, panic_end, health, ...);
    `panic` means `active` deliberately includes backends that are not healthy;
    `state` is the strategy's memory (JSON-serialisable, never mutated in place).
    """

    pool: str
    strategy: str
    active: tuple[str, ...]
    version: int
    reason: str
    since: float
    kind: str = "initial"
    panic: bool = False
    state: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "strategy": self.strategy,
            "active": list(self.active),
            "version": self.version,
            "reason": self.reason,
            "since": self.since,
            "kind": self.kind,
            "panic": self.panic,
            "state": _plain(self.state),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """The inverse of `to_dict` (a decision that came over the wire). Raises
        ValueError on anything malformed, so a publisher cannot install garbage."""
        try:
            active = data["active"]
            state = data.get("state")
            if state is None:
                state = {}
            if not isinstance(active, list | tuple) or not all(isinstance(a, str) for a in active):
                raise ValueError("active: a list of backend ids")
            if not isinstance(state, Mapping):
                raise ValueError("state: an object")
            version = data["version"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise ValueError("version: a non-negative integer")
            return cls(
                pool=str(data["pool"]),
                strategy=str(data["strategy"]),
                active=tuple(active),
                version=version,
                reason=str(data.get("reason", "")),
                since=float(data.get("since", 0.0)),
                kind=str(data.get("kind", "update")),
                panic=bool(data.get("panic", False)),
                state=_plain(state),
            )
        except KeyError as exc:
            raise ValueError(f"decision without {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"malformed decision: {exc}") from None


def _plain(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with lists for tuples (JSON-friendly, and equal however it was built)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in state.items()}


@dataclass(frozen=True, slots=True)
class View:
    """A pool as a strategy sees it at one evaluation (built by the machine, O(n)).

    `backends` is in config order. `eligible`: not draining, not in maintenance, with a
    positive effective weight (config order). `healthy`: eligible and UP and not held
    out by flap damping. `unknown`: eligible backends whose first health verdict is
    still pending (neither healthy nor unhealthy yet). `ranked`: primaries, then
    backups, each by `priority` (lower first), then config order. `ready_since`: for
    each healthy backend, since when it has been healthy without a break (monotonic).
    """

    pool: str
    now: float
    settings: FailoverConfig
    backends: Mapping[str, Backend]
    eligible: tuple[str, ...]
    healthy: frozenset[str]
    unknown: frozenset[str]
    ranked: tuple[str, ...]
    ready_since: Mapping[str, float]

    def is_backup(self, backend_id: str) -> bool:
        backend = self.backends.get(backend_id)
        return backend is not None and backend.is_backup

    def side(self, backup: bool) -> tuple[str, ...]:
        """Primaries (or backups) in config order."""
        return tuple(i for i, b in self.backends.items() if b.is_backup == backup)

    def healthy_side(self, backup: bool) -> tuple[str, ...]:
        return tuple(i for i in self.side(backup) if i in self.healthy)

    def state_of(self, backend_id: str) -> str:
        backend = self.backends.get(backend_id)
        return str(backend.state) if backend is not None else "gone"


@dataclass(frozen=True, slots=True)
class Choice:
    """What a strategy wants: the active ids in order, why, and what to remember.

    `kind` is failover / failback / update (the machine turns changes to or from an
    empty set into outage / recovery); `backend` is the backend the change is about,
    if one; `due` asks to be asked again at that (monotonic) time, e.g. when a failback
    hold ends, even if nothing else changes.
    """

    active: tuple[str, ...]
    reason: str
    kind: str = "update"
    backend: str | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    due: float | None = None


class Strategy:
    """Base of every strategy. Subclasses set `name` and implement `decide`/`trigger`.

    `leader_decides`: in a cluster, the leader makes this strategy's decisions and every
    node applies them (active_passive, multi_active, manual); False means each node
    decides for itself (active_active). Only the machine calls these, on the loop.
    """

    name: ClassVar[str] = ""
    leader_decides: ClassVar[bool] = True

    def decide(self, view: View, current: Decision) -> Choice:
        raise NotImplementedError

    def trigger(
        self, view: View, current: Decision, *, to: str | None, backend: str | None
    ) -> Choice:
        """An operator's forced failover: `to` is "backup", "primary" or None (switch
        sides), `backend` a specific backend id (strategies that allow it)."""
        raise NotImplementedError

    def fallback(self, view: View, active: tuple[str, ...]) -> str | None:
        """Where a retry goes when the single active backend fails before health checks
        notice: the backend this strategy would promote next. Computed once per
        decision, never per request. Default: the first healthy backend in rank order
        that is not active."""
        for backend_id in view.ranked:
            if backend_id in view.healthy and backend_id not in active:
                return backend_id
        return None

    def panic_scope(self, view: View, current: Decision) -> tuple[str, ...]:
        """The backends panic mode balances over. Default: every eligible backend."""
        return view.eligible

    @staticmethod
    def without_overrides(state: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in state.items() if k not in OVERRIDE_KEYS}


STRATEGIES: dict[str, type[Strategy]] = {}

S = TypeVar("S", bound=type[Strategy])


def register(cls: S) -> S:
    STRATEGIES[cls.name] = cls
    return cls


def create(name: str) -> Strategy:
    """The strategy for the config name `name`; ValueError if unknown."""
    # Import the strategy modules so that they register themselves.
    import haproxyd.failover.strategies  # noqa: F401

    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown failover strategy {name!r}") from None


def ranked(backends: Mapping[str, Backend]) -> tuple[str, ...]:
    """Primaries, then backups; each by priority (lower first), then config order."""
    order = {backend_id: index for index, backend_id in enumerate(backends)}
    return tuple(
        sorted(backends, key=lambda i: (backends[i].is_backup, backends[i].priority, order[i]))
    )


def side_kind(view: View, old: tuple[str, ...], new: tuple[str, ...]) -> str:
    """failover when traffic moves from the primaries onto the backups, failback for
    the way back, update otherwise (including changes within one side)."""
    if not old or not new:
        return "update"
    was_backup = all(view.is_backup(i) for i in old)
    is_backup = all(view.is_backup(i) for i in new)
    if is_backup and not was_backup:
        return "failover"
    if was_backup and not is_backup:
        return "failback"
    return "update"


class SideOverride:
    """An operator's "serve the backups" for strategies that otherwise serve every
    healthy primary (active_active, multi_active): `to: backup` pins the pool to its
    healthy backups until `to: primary`; when no backup is healthy any more, the pin
    yields (an override never causes an outage by itself)."""

    def forced_choice(self, view: View, current: Decision) -> Choice | None:
        if current.state.get("forced") != "backup":
            return None
        backups = view.healthy_side(True)
        if not backups:
            return None
        return Choice(
            backups,
            "forced onto the backups by an operator",
            kind=side_kind(view, current.active, backups),
            state=dict(current.state),
        )

    @staticmethod
    def ended_note(current: Decision) -> str:
        """The reason's prefix when a pin yielded because no backup is healthy."""
        return "forced backups all unhealthy: override ended; " if "forced" in current.state else ""

    def side_trigger(
        self,
        view: View,
        current: Decision,
        *,
        to: str | None,
        backend: str | None,
        normal: tuple[str, ...],
        state: Mapping[str, Any],
    ) -> Choice:
        """`normal`: what the pool would serve without the override; `state`: the
        strategy state to keep (without the override)."""
        if backend is not None:
            raise TriggerRefused(
                f"pool {view.pool!r} serves every healthy backend of a side: give "
                "`to: backup` or `to: primary`, not a backend"
            )
        forced = current.state.get("forced") == "backup"
        on_backups = forced or (
            bool(current.active) and all(view.is_backup(i) for i in current.active)
        )
        if to is None:
            to = "primary" if on_backups else "backup"
        if to == "backup":
            if forced:
                raise TriggerRefused(f"pool {view.pool!r} is already forced onto its backups")
            backups = view.healthy_side(True)
            if not backups:
                raise TriggerRefused(
                    f"pool {view.pool!r} has no healthy backup backend to fail over to"
                )
            return Choice(
                backups,
                "forced onto the backups",
                kind="failover",
                state={**state, "forced": "backup"},
            )
        primaries = view.healthy_side(False)
        if not primaries:
            raise TriggerRefused(f"pool {view.pool!r} has no healthy primary to fail back to")
        if not on_backups:
            raise TriggerRefused(f"pool {view.pool!r} already serves its primaries")
        return Choice(normal or primaries, "back to the primaries", kind="failback", state=state)
