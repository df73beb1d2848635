"""Node checks (`disk_space`, `memory_usage`) against this machine, via psutil."""

from __future__ import annotations

import psutil
from health_helpers import hc

from haproxyd.health.base import create_check


async def test_disk_space_passes_and_fails(tmp_path):
    ok = await create_check(hc("disk_space", path=str(tmp_path), min_free_bytes=1)).probe(None)
    assert ok.ok, ok.reason
    assert ok.reason.startswith(f"{tmp_path}: ")
    # Free space is never 100% of a file system that holds this test.
    bad = await create_check(hc("disk_space", path=str(tmp_path), min_free_percent=100)).probe(None)
    assert not bad.ok
    assert "below 100%" in bad.reason


async def test_disk_space_missing_path_fails(tmp_path):
    result = await create_check(
        hc("disk_space", path=str(tmp_path / "absent"), min_free_percent=1)
    ).probe(None)
    assert not result.ok


async def test_memory_usage_passes_and_fails():
    used = psutil.virtual_memory().percent
    assert (await create_check(hc("memory_usage", max_percent=100)).probe(None)).ok
    result = await create_check(hc("memory_usage", max_percent=used / 100)).probe(None)
    assert not result.ok
    assert "used" in result.reason
