"""Task helpers shared by the long-running parts (failover, resolver, data plane,
cluster, worker)."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel `tasks` (None entries are skipped) and wait until every one has ended.
    What they raise on the way out (CancelledError, a closed channel...) is not
    re-raised: the caller is stopping them. A cancellation of the caller itself still
    propagates."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
