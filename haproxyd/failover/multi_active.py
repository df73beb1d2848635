"""multi_active: every group of backends is active; a group whose healthy share falls
below `min_healthy_share` is taken out, and its traffic spills to the other groups.

Source: Envoy's locality-aware load balancing and priority spill-over (a locality that
is too degraded hands its load to the others), HAProxy's `min-active`-style group
cut-off. Backends group by `group`, else `region`, else one default group. A group's
healthy share is its healthy weight over the configured weight of its members whose
health is known (draining/maintenance members and pending first verdicts count in
neither). Spill goes "in proportion to capacity" because the active set is the healthy
members of the remaining groups with their weights: a weighted algorithm then gives
each remaining group traffic in proportion to its healthy weight (round_robin ignores
weights and spreads by backend count). If no group qualifies, every healthy primary
serves (better degraded than down); if no primary is healthy, the backups.

State: `out` (groups taken out, sorted; for the failover/failback events), `forced`.
Cost: O(n) per decision.
"""

from __future__ import annotations

from dataclasses import replace

from haproxyd.failover.base import (
    Choice,
    Decision,
    SideOverride,
    Strategy,
    View,
    register,
    side_kind,
)

DEFAULT_GROUP = "default"


def group_of(view: View, backend_id: str) -> str:
    backend = view.backends[backend_id]
    return backend.group or backend.region or DEFAULT_GROUP


@register
class MultiActive(SideOverride, Strategy):
    name = "multi_active"

    def decide(self, view: View, current: Decision) -> Choice:
        forced = self.forced_choice(view, current)
        if forced is not None:
            return forced
        note = self.ended_note(current)
        groups: dict[str, list[str]] = {}
        for backend_id in view.side(False):
            groups.setdefault(group_of(view, backend_id), []).append(backend_id)
        eligible = set(view.eligible)
        minimum = view.settings.min_healthy_share
        qualifying: list[str] = []
        out: list[str] = []
        shares: dict[str, float] = {}
        for name, members in groups.items():
            known = [i for i in members if i in eligible and i not in view.unknown]
            total = sum(view.backends[i].weight for i in known)
            healthy = sum(view.backends[i].weight for i in members if i in view.healthy)
            if total <= 0:
                continue  # nothing known about it yet (or all drained): neither in nor out
            shares[name] = share = healthy / total
            if healthy > 0 and share >= minimum:
                qualifying.append(name)
            else:
                out.append(name)
        state = {**self.without_overrides(current.state), "out": sorted(out)}
        if qualifying:
            keep = set(qualifying)
            active = tuple(
                i for i in view.side(False) if i in view.healthy and group_of(view, i) in keep
            )
            reason = "groups " + ", ".join(f"{g} ({shares[g]:.0%})" for g in qualifying)
            if out:
                reason += "; out below min_healthy_share {:.0%}: {} (spilled to the others)".format(
                    minimum, ", ".join(f"{g} ({shares[g]:.0%})" for g in sorted(out))
                )
        else:
            active = view.healthy_side(False)
            reason = "no group has min_healthy_share healthy: every healthy primary serves"
            if not active:
                if not current.active and any(i in view.unknown for i in view.side(False)):
                    active, reason = (), "waiting for the primaries' first health verdict"
                else:
                    active = view.healthy_side(True)
                    reason = (
                        "no healthy primary: serving the backups"
                        if active
                        else "no healthy backend"
                    )
        kind = side_kind(view, current.active, active)
        if kind == "update":
            before = set(current.state.get("out", ()))
            after = set(out)
            if after - before and not before - after:
                kind = "failover"
            elif before - after and not after - before:
                kind = "failback"
        return Choice(active, note + reason, kind=kind, state=state)

    def trigger(
        self, view: View, current: Decision, *, to: str | None, backend: str | None
    ) -> Choice:
        base = {**self.without_overrides(current.state)}
        normal = self.decide(view, _unforced(current)).active
        return self.side_trigger(view, current, to=to, backend=backend, normal=normal, state=base)


def _unforced(current: Decision) -> Decision:
    """`current` without an operator's override (what the pool would serve by itself)."""
    return replace(current, state={k: v for k, v in current.state.items() if k != "forced"})
