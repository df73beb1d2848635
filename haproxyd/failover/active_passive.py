"""active_passive: exactly one active backend, promoted in rank order.

Source: HAProxy's `backup` servers without `allbackups` (the first usable server in
order takes everything), Keepalived/VRRP priorities, and Traefik's failover handler
(a primary with a fallback). The rank is primaries then backups, each by `priority`
(lower first) then config order. When the active backend fails, the first healthy one
in rank is promoted at once. A backend ranked higher than the active one that becomes
healthy again takes over (failback) only after it has been healthy without a break for
`failback_hold` (anti-flap), and with `failback: manual` only on an operator's trigger.

Start-up: while a higher-ranked backend's first health verdict is pending, nothing
lower is promoted (a daemon must not start on its backup because the backup's probe
happened to answer first); the wait is bounded by one probe interval.

A forced failover (`to: backup|primary`, or a backend id) pins the chosen backend: auto
failback does not undo an operator's choice; the pin ends on the next trigger or when
the pinned backend fails. Cost: O(n log n) per decision (the rank sort), O(1) per
request (the pool holds one backend; the retry fallback is precomputed).

State: `current` (the backend this strategy made active, kept apart from the routing
set so panic mode can overlay it), `pinned` (an operator's choice).
"""

from __future__ import annotations

from typing import Any

from haproxyd.failover.base import Choice, Decision, Strategy, TriggerRefused, View, register


@register
class ActivePassive(Strategy):
    name = "active_passive"

    def decide(self, view: View, current: Decision) -> Choice:
        state: dict[str, Any] = dict(current.state)
        cur = state.get("current")
        if cur not in view.backends:
            cur = None
        note = ""
        pinned = state.get("pinned")
        if pinned is not None:
            if pinned in view.healthy:
                return Choice(
                    (pinned,),
                    f"{pinned} pinned by an operator",
                    kind="failover",
                    backend=pinned,
                    state={**state, "current": pinned},
                )
            del state["pinned"]
            note = f"pinned {pinned} is {view.state_of(pinned)}: pin released; "
        if cur is not None and cur in view.healthy:
            return self._keep_or_fail_back(view, cur, state, note)
        # The active backend failed (or there is none yet): promote the first healthy
        # backend in rank order.
        target = None
        waiting = None
        for backend_id in view.ranked:
            if backend_id in view.healthy:
                target = backend_id
                break
            if cur is None and backend_id in view.unknown:
                waiting = backend_id
                break
        if target is None:
            state.pop("current", None)
            why = (
                f"waiting for the first health verdict of {waiting}"
                if waiting
                else "no healthy backend"
            )
            return Choice((), note + why, kind="failover", state=state)
        state["current"] = target
        if cur is None:
            reason = f"{target} is the first healthy backend in rank order"
        else:
            reason = f"{cur} is {view.state_of(cur)}: {target} promoted"
        return Choice((target,), note + reason, kind="failover", backend=target, state=state)

    def _keep_or_fail_back(self, view: View, cur: str, state: dict[str, Any], note: str) -> Choice:
        rank = view.ranked
        better = [i for i in rank[: rank.index(cur)] if i in view.healthy]
        keep = {**state, "current": cur}
        if not better:
            return Choice((cur,), note + f"{cur} is the preferred healthy backend", state=keep)
        settings = view.settings
        if settings.failback == "manual":
            return Choice(
                (cur,),
                note + f"{cur} stays active (failback: manual) although {better[0]} is healthy",
                state=keep,
            )
        hold = settings.failback_hold
        ready = [i for i in better if view.now - view.ready_since[i] >= hold]
        if ready:
            target = ready[0]
            return Choice(
                (target,),
                note + f"{target} healthy for failback_hold ({hold:g}s): failback from {cur}",
                kind="failback",
                backend=target,
                state={**state, "current": target},
            )
        due = min(view.ready_since[i] + hold for i in better)
        return Choice(
            (cur,),
            note + f"{cur} stays active until {better[0]} has been healthy for {hold:g}s",
            state=keep,
            due=due,
        )

    def trigger(
        self, view: View, current: Decision, *, to: str | None, backend: str | None
    ) -> Choice:
        state: dict[str, Any] = {k: v for k, v in current.state.items() if k != "pinned"}
        cur = state.get("current")
        if cur not in view.backends:
            cur = None
        if backend is not None:
            if backend not in view.backends:
                raise TriggerRefused(f"pool {view.pool!r} has no backend {backend!r}")
            target = backend
        else:
            if to is None:
                to = "primary" if cur is not None and view.is_backup(cur) else "backup"
            if to == "primary":
                candidates = [i for i in view.ranked if not view.is_backup(i)]
            else:
                candidates = [i for i in view.ranked if view.is_backup(i) and i != cur]
            healthy = [i for i in candidates if i in view.healthy]
            if not healthy:
                raise TriggerRefused(
                    f"pool {view.pool!r} has no healthy {to} backend to fail over to"
                )
            target = healthy[0]
        if target not in view.healthy:
            raise TriggerRefused(f"backend {target!r} is {view.state_of(target)}, not healthy")
        if target == cur:
            raise TriggerRefused(f"backend {target!r} is already the active backend")
        rank = view.ranked
        kind = (
            "failback" if cur is not None and rank.index(target) < rank.index(cur) else "failover"
        )
        state["current"] = target
        first_healthy = next((i for i in rank if i in view.healthy), None)
        if target != first_healthy:
            # Not where the rules would go by themselves: pin it, or failback would undo it.
            state["pinned"] = target
        return Choice((target,), f"forced onto {target}", kind=kind, backend=target, state=state)
