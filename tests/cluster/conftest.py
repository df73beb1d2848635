"""Fixtures for the cluster tests: ClusterStores on the test's redis-server
(`redis_port`, tests/conftest.py), closed at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from haproxyd.cluster.store import ClusterStore, connect


@pytest.fixture
async def make_store(redis_port: int) -> AsyncIterator[Any]:
    made: list[ClusterStore] = []

    def make(prefix: str = "t") -> ClusterStore:
        store = ClusterStore(connect(f"redis://127.0.0.1:{redis_port}/0", timeout=1.0), prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
