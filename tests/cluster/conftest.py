"""Fixtures for the cluster tests: a redis-server per test (killable, restartable on
its port), and ClusterStores on it that are closed at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers.redis_server import RedisProcesses

from haproxyd.cluster.store import ClusterStore, connect


@pytest.fixture
def redis_procs(tmp_path: Any) -> Iterator[RedisProcesses]:
    procs = RedisProcesses(tmp_path)
    yield procs
    procs.stop()


@pytest.fixture
def redis_port(redis_procs: RedisProcesses) -> int:
    return redis_procs.spawn("cluster")


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
