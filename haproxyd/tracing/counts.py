"""How many spans one process exported and dropped: the Prometheus counters
`haproxyd_tracing_spans_exported_total` and `haproxyd_tracing_spans_dropped_total`
(admin/metrics.py). No dependency on the OpenTelemetry SDK, so that a process with
tracing off (or without the `[tracing]` extra) reports zeros the same way."""

from __future__ import annotations

import threading

DROP_REASONS = ("queue_full", "export_failed")


class SpanCounts:
    """One process's span counters, kept across exporter swaps (a reload replaces the
    exporter, never the counts). Written by the event loop (a span dropped because the
    queue is full) and by exporter threads (a batch exported or failed), possibly the
    retiring exporter's and its successor's at once, hence the lock: taken once per
    batch or per dropped span, never per exported span."""

    __slots__ = ("_dropped", "_exported", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exported = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)

    def add_exported(self, spans: int) -> None:
        with self._lock:
            self._exported += spans

    def add_dropped(self, reason: str, spans: int) -> None:
        with self._lock:
            self._dropped[reason] += spans

    def snapshot(self) -> dict[str, object]:
        """JSON-serialisable: a worker sends it with its stats (worker.py)."""
        with self._lock:
            return {"exported": self._exported, "dropped": dict(self._dropped)}


def sum_snapshots(snapshots: list[dict[str, object]]) -> dict[str, object]:
    """Several processes' `SpanCounts.snapshot()`, summed."""
    exported = 0
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for snap in snapshots:
        exported += int(snap.get("exported", 0))  # type: ignore[call-overload]
        for reason, n in dict(snap.get("dropped", {})).items():  # type: ignore[call-overload]
            dropped[reason] = dropped.get(reason, 0) + int(n)
    return {"exported": exported, "dropped": dropped}
