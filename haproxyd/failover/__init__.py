"""Failover: the state machine that decides each pool's active backends (`machine.py`),
one module per strategy (`active_passive.py`, `active_active.py`, `multi_active.py`,
`manual.py`) behind the interface in `base.py`, and the event log (`events.py`)."""
