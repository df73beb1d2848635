"""active_active: every healthy primary takes traffic; the backups only when no primary
is healthy.

Source: Nginx's and HAProxy's `backup` servers (HAProxy's `allbackups`: all backups
at once). The balancer spreads the load over the active set by the pool's algorithm.
An operator may force the pool onto its backups (`to: backup`) until `to: primary`
(`SideOverride`). Start-up: while no primary is healthy yet and some primary's first
verdict is pending, the backups are not used either. Each node decides for itself in a
cluster (node-local health is what matters here). Cost: O(n) per decision.

State: `forced` ("backup") while an operator's override holds.
"""

from __future__ import annotations

from haproxyd.failover.base import (
    Choice,
    Decision,
    SideOverride,
    Strategy,
    View,
    register,
    side_kind,
)


@register
class ActiveActive(SideOverride, Strategy):
    name = "active_active"
    leader_decides = False

    def decide(self, view: View, current: Decision) -> Choice:
        forced = self.forced_choice(view, current)
        if forced is not None:
            return forced
        state = self.without_overrides(current.state)
        note = self.ended_note(current)
        active, reason = self._normal(view, current)
        kind = side_kind(view, current.active, active)
        return Choice(active, note + reason, kind=kind, state=state)

    @staticmethod
    def _normal(view: View, current: Decision) -> tuple[tuple[str, ...], str]:
        primaries = view.healthy_side(False)
        if primaries:
            return primaries, f"healthy primaries: {', '.join(primaries)}"
        if not current.active and any(i in view.unknown for i in view.side(False)):
            return (), "waiting for the primaries' first health verdict"
        backups = view.healthy_side(True)
        if backups:
            return backups, "no healthy primary: serving the backups"
        return (), "no healthy backend"

    def trigger(
        self, view: View, current: Decision, *, to: str | None, backend: str | None
    ) -> Choice:
        state = self.without_overrides(current.state)
        normal = view.healthy_side(False)
        return self.side_trigger(view, current, to=to, backend=backend, normal=normal, state=state)
