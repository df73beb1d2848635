"""Garbage-collector tuning for a long-running daemon."""

from __future__ import annotations

import gc

# Allocations (minus deallocations) of container objects between two young-generation
# collections: CPython's 700 suits scripts; a proxy and its prober allocate short-lived
# request objects by the hundred thousand, and a young collection per few requests
# costs more than the memory it saves (uvicorn and gunicorn users raise it likewise).
GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Raise the young-generation threshold (once, at start)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def freeze_heap() -> None:
    """Put what is alive now (modules, config, pools, sessions: long-lived) out of the
    cyclic garbage collector's sight (`gc.freeze`, as Instagram does for its servers).
    Full collections otherwise walk that whole heap again and again; with 1,000 health
    sessions they took a good share of the prober's CPU. Called after start and after
    every reload (unfreezing first, so the previous config can be collected)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
