"""`custom_script` check: real subprocesses, environment, exit codes, hung scripts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

from health_helpers import backend, hc, make_pool, pool_config, wait_until

from haproxyd.balancer.state import BackendState
from haproxyd.health.base import create_check


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


async def test_exit_zero_passes_with_backend_environment(tmp_path):
    script = tmp_path / "check.sh"
    script.write_text(
        '#!/bin/sh\n[ "$HAPROXYD_BACKEND_HOST" = 127.0.0.1 ] && [ "$HAPROXYD_BACKEND_PORT" = 8081 ]'
        ' && [ "$HAPROXYD_BACKEND_ID" = b1 ] && [ "$EXTRA" = yes ] && echo fine\n'
    )
    script.chmod(0o755)
    check = create_check(hc("custom_script", command=[str(script)], env={"EXTRA": "yes"}))
    result = await check.probe(backend(8081))
    assert result.ok, result.reason
    assert result.reason == "fine"


async def test_nonzero_exit_fails_with_output():
    check = create_check(hc("custom_script", command="sh -c 'echo replica lagging; exit 2'"))
    result = await check.probe(backend(1))
    assert not result.ok
    assert result.reason == "exit 2: replica lagging"


async def test_missing_command_fails():
    result = await create_check(hc("custom_script", command=["/nonexistent/x"])).probe(None)
    assert not result.ok
    assert result.reason.startswith("cannot run /nonexistent/x")


async def test_hung_script_and_its_children_are_killed_at_timeout(tmp_path):
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    check = create_check(hc("custom_script", command=[sys.executable, "-c", code], timeout=0.5))
    start = time.monotonic()
    result = await check.probe(backend(1))
    elapsed = time.monotonic() - start
    assert not result.ok
    assert result.reason == "timed out after 0.5s, killed"
    assert 0.45 <= elapsed < 2.0
    script_pid, child_pid = map(int, pids.read_text().split())
    await wait_until(lambda: not alive(child_pid), 2.0, "the script's child to die")
    assert not alive(script_pid)


async def test_cancellation_kills_the_process_group(tmp_path):
    pids = tmp_path / "pids"
    check = create_check(
        hc("custom_script", command=["sh", "-c", f"sleep 60 & echo $! > {pids}; wait"])
    )
    task = asyncio.create_task(check.probe(None))
    await wait_until(lambda: pids.exists() and pids.read_text().strip(), 5.0, "the pid file")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    child = int(pids.read_text())
    await wait_until(lambda: not alive(child), 2.0, "the background sleep to die")


async def test_cancellation_while_spawning_still_kills_the_script(tmp_path, monkeypatch):
    """A timeout that lands after the fork but before asyncio has wired the pipes (seen
    under load) must still kill the script's process group."""
    pids = tmp_path / "pids"
    real_spawn = asyncio.create_subprocess_exec
    forked = asyncio.Event()

    async def slow_spawn(*args, **kwargs):
        proc = await real_spawn(*args, **kwargs)
        forked.set()
        await asyncio.sleep(0.2)  # the pipes are not ready yet
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_spawn)
    check = create_check(
        hc("custom_script", command=["sh", "-c", f"sleep 60 & echo $! > {pids}; wait"])
    )
    task = asyncio.create_task(check.probe(None))
    await forked.wait()
    await wait_until(lambda: pids.exists() and pids.read_text().strip(), 5.0, "the pid file")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    child = int(pids.read_text())
    await wait_until(lambda: not alive(child), 2.0, "the background sleep to die")


async def test_hung_script_under_the_scheduler(tmp_path, scheduler_factory):
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 60\n")
    script.chmod(0o755)
    pool = make_pool("jobs", [1])
    scheduler = scheduler_factory()
    config = hc("custom_script", command=str(script), interval=0.05, timeout=0.3, fall=1)
    scheduler.update({"jobs": pool}, {"jobs": pool_config([config])})
    await scheduler.start()
    await wait_until(lambda: pool.backends["jobs-0"].state == BackendState.DOWN, 5, "down")
    status = scheduler.statuses("jobs")[0]
    assert "0.3s" in status.last_reason  # killed at the check's timeout
    first = int(pids.read_text().split()[0])
    await wait_until(lambda: not alive(first), 2.0, "the hung script to die")
