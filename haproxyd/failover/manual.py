"""manual: traffic moves only when an operator says so.

Source: the "manual failover" mode of database proxies and of the seed design: health
events are recorded and alerted (event kind `health`, flagged `needs_operator`) but
never move traffic to another set of backends. The designated set is the pool's
primaries (config order; all backends if it has none) until `POST
/api/v1/ha/failover/trigger` designates the backups (`to: backup`), the primaries
again (`to: primary`), or one backend (`backend: ID`). Within the designated set only
healthy backends serve: a designated backend that is down gets no traffic (and, with
every designated backend down, the pool answers 503 until an operator acts); it is
never replaced by a backend outside the set, not even for a retry (no fallback).
Panic mode, if configured, balances over the designated set only. In a cluster the
leader holds the designated set. Cost: O(n) per decision.

State: `designated` (a list of ids; absent = the primaries, following the config).
"""

from __future__ import annotations

from typing import Any

from haproxyd.failover.base import Choice, Decision, Strategy, TriggerRefused, View, register


@register
class Manual(Strategy):
    name = "manual"

    @staticmethod
    def designated(view: View, current: Decision) -> tuple[str, ...]:
        chosen = current.state.get("designated")
        if chosen is None:
            return view.side(False) or tuple(view.backends)
        return tuple(i for i in chosen if i in view.backends)

    def decide(self, view: View, current: Decision) -> Choice:
        designated = self.designated(view, current)
        active = tuple(i for i in designated if i in view.healthy)
        down = [i for i in designated if i not in view.healthy]
        reason = "designated " + (", ".join(designated) or "nothing")
        if down:
            reason += f"; not serving (unhealthy): {', '.join(down)}"
            if not active:
                reason += "; an operator must trigger a failover to move traffic"
        return Choice(active, reason, kind="health", state=dict(current.state))

    def fallback(self, view: View, active: tuple[str, ...]) -> str | None:
        return None  # nothing moves by itself, not even one retry

    def panic_scope(self, view: View, current: Decision) -> tuple[str, ...]:
        eligible = set(view.eligible)
        return tuple(i for i in self.designated(view, current) if i in eligible)

    def trigger(
        self, view: View, current: Decision, *, to: str | None, backend: str | None
    ) -> Choice:
        now = self.designated(view, current)
        state: dict[str, Any] = dict(current.state)
        if backend is not None:
            if backend not in view.backends:
                raise TriggerRefused(f"pool {view.pool!r} has no backend {backend!r}")
            target: tuple[str, ...] = (backend,)
            state["designated"] = [backend]
            kind = "failover" if view.is_backup(backend) else "failback"
        else:
            if to is None:
                to = "primary" if now and all(view.is_backup(i) for i in now) else "backup"
            if to == "backup":
                target = view.side(True)
                state["designated"] = list(target)
                kind = "failover"
            else:
                target = view.side(False)
                state.pop("designated", None)
                kind = "failback"
        healthy = tuple(i for i in target if i in view.healthy)
        if not healthy:
            what = (
                f"backend {backend!r} is {view.state_of(backend)}"
                if backend
                else f"pool {view.pool!r} has no healthy {to} backend"
            )
            raise TriggerRefused(f"{what}: nothing to fail over to")
        if tuple(target) == now:
            raise TriggerRefused(f"pool {view.pool!r} already designates {', '.join(now)}")
        return Choice(
            healthy, "designated " + ", ".join(target), kind=kind, backend=backend, state=state
        )
