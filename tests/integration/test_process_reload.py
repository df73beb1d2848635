"""SIGHUP reload under load (zero failed requests, an invalid file changes nothing), and
the operator's side of it: `haproxyd reload -c FILE [-p PIDFILE]` and `--pid-file`."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from helpers.asserts import wait_stable
from helpers.daemon import free_port, run_cli
from helpers.http1 import build_request, wait_until
from helpers.process import (
    LoadLoop,
    admin_json,
    connection_owners,
    metrics_text,
    spawn_with_args,
    wait_status,
    wait_workers,
)

pytestmark = pytest.mark.timeout(80)

CLIENTS = 50  # keep-alive connections of the main load loop
EXTRA_CLIENTS = 10  # on the listener added by a reload
STAGE_SECONDS = 1.2  # at least this long (and 100 requests) between two reloads


@dataclass
class Stage:
    what: str
    algorithm: str
    backends: tuple[str, ...]
    add_listener: bool = False
    invalid: bool = False


# Ten valid reloads: alternately a backend added or removed and the algorithm changed,
# once a second listener; an invalid file in the middle.
STAGES = [
    Stage("add b3", "round_robin", ("b1", "b2", "b3")),
    Stage("algorithm", "least_connections", ("b1", "b2", "b3")),
    Stage("remove b3", "least_connections", ("b1", "b2")),
    Stage("algorithm", "random", ("b1", "b2")),
    Stage("add b3", "random", ("b1", "b2", "b3")),
    Stage("invalid: remove b2, unknown key", "round_robin", ("b1", "b3"), invalid=True),
    Stage("second listener", "random", ("b1", "b2", "b3"), add_listener=True),
    Stage("algorithm", "weighted_round_robin", ("b1", "b2", "b3")),
    Stage("remove b3", "weighted_round_robin", ("b1", "b2")),
    Stage("algorithm", "least_connections", ("b1", "b2")),
    Stage("add b3", "least_connections", ("b1", "b2", "b3")),
]


def _reload_done(before: int):
    return lambda status: sum(status["reloads"].values()) > before


def _pool_view(status: dict[str, Any]) -> tuple[str, int]:
    pool = status["pools"][0]
    return pool["algorithm"], pool["backends"]


async def _wait_growth(counter, start: int, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while counter() <= start:
        if time.monotonic() >= deadline:
            raise AssertionError(f"no new requests to {what} within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("workers", [1, 2])
async def test_reload_under_load_loses_nothing(backend, daemon, workers):
    servers = {name: backend(name) for name in ("b1", "b2", "b3")}
    d = daemon([servers["b1"], servers["b2"]], extra={"workers": workers})
    status = await asyncio.to_thread(wait_workers, d, workers)
    pids = status["workers"]["pids"]
    pool = d.config["pools"]["web"]
    pool["balancer"] = {"algorithm": "round_robin"}

    load = LoadLoop(d.port, clients=CLIENTS, duration=60).start()
    extra: LoadLoop | None = None
    version, ok, errors = 1, 0, 0
    removed_at: int | None = None  # b3's request count when its removal was confirmed
    try:
        await load.wait_ok(200)
        for stage in STAGES:
            since = time.monotonic()
            target = load.stats.ok + 100
            while time.monotonic() - since < STAGE_SECONDS or load.stats.ok < target:
                assert time.monotonic() - since < 20, f"load stalled before {stage.what}"
                await asyncio.sleep(0.02)
            if removed_at is not None:
                late = len(servers["b3"].requests) - removed_at
                assert late <= CLIENTS + EXTRA_CLIENTS, f"{late} requests to b3 after removal"
                removed_at = None
            previous = copy.deepcopy(d.config)
            pool["balancer"]["algorithm"] = stage.algorithm
            pool["backends"] = [servers[name].config() for name in stage.backends]
            if stage.invalid:
                pool["bogus"] = True
            if stage.add_listener:
                new_port = free_port()
                d.config["listeners"].append({"address": f"127.0.0.1:{new_port}"})
            d.write_config()
            b2_before = len(servers["b2"].requests)
            b3_before = len(servers["b3"].requests)
            os.kill(d.pid, signal.SIGHUP)
            status = await asyncio.to_thread(
                wait_status, d, _reload_done(ok + errors), what=f"reload ({stage.what})"
            )
            if stage.invalid:
                errors += 1
                d.config = previous
                pool = d.config["pools"]["web"]
                assert status["last_reload"]["result"] == "error", status["last_reload"]
                assert any("bogus" in e for e in status["last_reload"]["errors"]), status
                # Nothing changed: same version, algorithm and backends; b2 still serves.
                assert _pool_view(status) == ("random", 3), status["pools"]
                await _wait_growth(lambda: len(servers["b2"].requests), b2_before, "b2")
            else:
                ok += 1
                version += 1
                assert status["last_reload"]["result"] == "ok", status["last_reload"]
                assert _pool_view(status) == (stage.algorithm, len(stage.backends))
            assert status["config_version"] == version
            assert status["reloads"] == {"ok": ok, "error": errors}
            if not stage.invalid and stage.what == "add b3":
                await _wait_growth(lambda: len(servers["b3"].requests), b3_before, "b3")
            if stage.what == "remove b3":
                removed_at = len(servers["b3"].requests)
            if stage.add_listener:
                extra = LoadLoop(new_port, clients=EXTRA_CLIENTS, duration=60).start()
                await extra.wait_ok(50)
        await load.wait_ok(load.stats.ok + 100)
    finally:
        stats = await load.stop()
        extra_stats = await extra.stop() if extra is not None else None

    assert ok == 10 and errors == 1
    for name, loop_stats in (("main", stats), ("second listener", extra_stats)):
        assert loop_stats is not None
        assert not loop_stats.failures, (
            f"{name}: {len(loop_stats.failures)} failed requests of "
            f"{loop_stats.ok + len(loop_stats.failures)}: "
            f"{[str(f) for f in loop_stats.failures[:10]]}"
        )
        # Applied in place: no connection was closed or reset, none had to be reopened.
        assert loop_stats.closes == 0, f"{name}: {loop_stats.closes} connections closed"
    assert stats.connections == CLIENTS
    assert set(stats.backends) == {"b1", "b2", "b3"}, stats.backends
    status = admin_json(d, "/api/v1/ha/status")
    assert status["workers"]["pids"] == pids and status["workers"]["restarts"] == 0
    metrics = await asyncio.to_thread(metrics_text, d)
    assert 'haproxyd_config_reloads_total{result="error"} 1.0' in metrics
    assert 'haproxyd_config_reloads_total{result="ok"} 10.0' in metrics


def test_reload_command_and_pid_file(backend, daemon):
    b1, b2, b3 = backend("b1"), backend("b2"), backend("b3")
    d = daemon([b1], extra={"workers": 2}, start=False)
    pid_file = d.workdir / "haproxyd.pid"
    spawn_with_args(d, "-p", str(pid_file))
    wait_workers(d, 2)
    assert pid_file.read_text().split() == [str(d.pid)], "the pid file names the master"
    path = str(d.config_path)

    # A good file: exit 0, the new version printed, the change live when it returns.
    d.config["pools"]["web"]["backends"].append(b2.config())
    d.write_config()
    result = run_cli("reload", "-c", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration version 2" in result.stdout
    status = admin_json(d, "/api/v1/ha/status")
    assert status["config_version"] == 2 and status["pools"][0]["backends"] == 2

    # The same with -p PIDFILE.
    d.config["pools"]["web"]["backends"].append(b3.config())
    d.write_config()
    result = run_cli("reload", "-c", path, "-p", str(pid_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration version 3" in result.stdout
    assert admin_json(d, "/api/v1/ha/status")["pools"][0]["backends"] == 3

    # A file the schema rejects: exit 1 with each error (its YAML path); nothing changes.
    good = copy.deepcopy(d.config)
    d.config["pools"]["web"]["bogus"] = True
    d.config["timeouts"]["connect"] = "soon"
    d.write_config()
    for args in ((), ("-p", str(pid_file))):
        result = run_cli("reload", "-c", path, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "bogus" in result.stderr and "timeouts.connect" in result.stderr, result.stderr
        assert "reloaded" not in result.stdout
        assert "nothing signalled" in result.stderr, result.stderr
    # Not even with -p: the file is checked before anything is sent (test_reload_client).
    status = admin_json(d, "/api/v1/ha/status")
    assert status["config_version"] == 3 and status["reloads"] == {"ok": 2, "error": 0}

    # A file only the daemon can reject (its new listener's port is taken): exit 1 with
    # the daemon's error, read back from the admin API.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        d.config = copy.deepcopy(good)
        d.config["listeners"].append({"address": f"127.0.0.1:{busy}"})
        d.write_config()
        result = run_cli("reload", "-c", path, "-p", str(pid_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "in use" in result.stderr and "rejected" in result.stderr, result.stderr
    status = admin_json(d, "/api/v1/ha/status")
    assert status["config_version"] == 3 and status["reloads"] == {"ok": 2, "error": 1}
    with d.conn() as conn:
        assert conn.request("GET", "/").status == 200

    # The pid file goes away with the process.
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(15) == 0
    assert not pid_file.exists()


def test_reload_command_without_a_daemon(daemon, backend):
    d = daemon([backend("b1")], start=False)
    d.write_config()
    result = run_cli("reload", "-c", str(d.config_path))
    assert result.returncode == 1
    assert "cannot reach the admin API" in result.stderr, result.stderr


def test_a_failed_second_start_leaves_the_pid_file_alone(backend, daemon):
    d = daemon([backend("b1")], start=False)
    pid_file = d.workdir / "haproxyd.pid"
    spawn_with_args(d, "-p", str(pid_file))
    wait_workers(d, 1)
    second = run_cli("-c", str(d.config_path), "-p", str(pid_file))
    assert second.returncode != 0 and "in use" in second.stderr, second.stderr
    assert pid_file.exists(), "the running daemon's pid file was removed"
    assert pid_file.read_text().split() == [str(d.pid)]


def _reload(d, workers: int, done: int, timeout: float = 30.0) -> dict[str, Any]:
    d.config["workers"] = workers
    d.write_config()
    os.kill(d.pid, signal.SIGHUP)
    status = wait_status(
        d, _reload_done(done), timeout=timeout, what=f"the reload to workers: {workers}"
    )
    assert status["last_reload"]["result"] == "ok", status["last_reload"]
    return status


def test_shrinking_workers_serves_connections_queued_on_the_retired_slot(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], extra={"workers": 3})
    retiring = wait_workers(d, 3)["workers"]["pids"][2]
    # Freeze the worker of slot 2 so the connections hashed to its socket queue up (a
    # busy worker, made deterministic); the other workers answer theirs.
    os.kill(retiring, signal.SIGSTOP)
    conns = [d.conn(timeout=10) for _ in range(24)]
    try:
        for conn in conns:
            conn.send(build_request("GET", "/"))
        served = wait_stable(lambda: len(b1.requests), quiet=0.3, timeout=10)
        assert served < 24, "no connection went to slot 2 (probability (2/3)**24)"
        _reload(d, 2, 0)
        os.kill(retiring, signal.SIGCONT)
        for conn in conns:  # every connection the kernel accepted gets its answer
            assert conn.read_response(timeout=10).status == 200
    finally:
        os.kill(retiring, signal.SIGCONT)
        for conn in conns:
            conn.close()
    # The retired worker exits; the master outlives it (its channel's teardown once
    # aborted the master right there) and keeps serving.
    wait_until(lambda: _gone(retiring), timeout=20, what="the retired worker to exit")
    assert d.alive(), d.diag()
    with d.conn() as conn:
        assert conn.request("GET", "/").status == 200


def test_growing_while_a_retired_worker_drains_is_prompt(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], extra={"workers": 3}, timeouts={"shutdown": "10s"})
    pids = wait_workers(d, 3)["workers"]["pids"]
    slow = None
    others = []
    try:
        # A slow request on the worker of slot 2 keeps it draining after it retires.
        for _ in range(40):
            conn = d.conn(timeout=10)
            assert conn.request("GET", "/").status == 200
            port = conn.sock.getsockname()[1]
            if connection_owners([pids[2]], d.port, [port]):
                slow = conn
                break
            others.append(conn)
        assert slow is not None, "no connection reached slot 2 in 40 tries"
        slow.send(build_request("GET", "/slow?ms=4000"))
        b1.wait_for_requests(len(others) + 2)
        _reload(d, 2, 0)
        started = time.monotonic()
        try:
            status = _reload(d, 3, 1, timeout=5.0)
        except AssertionError:
            d.proc.kill()  # stuck in the reload for 20 s: do not wait for it
            raise
        assert time.monotonic() - started < 5.0
        assert len(status["workers"]["pids"]) >= 3
        resp = slow.read_response(timeout=10)
        assert resp.status == 200 and resp.has_token("Connection", "close"), resp
        wait_until(lambda: _gone(pids[2]), timeout=20, what="the retired worker to exit")
        assert d.alive(), d.diag()
    finally:
        for conn in [*others, slow]:
            if conn is not None:
                conn.close()


async def test_resizing_workers_under_load_keeps_the_master_and_every_request(backend, daemon):
    """What an operator does: edit `workers:` and SIGHUP, again and again, under load.
    Every retired worker drains and exits while the master keeps running; no request
    fails (the retiring worker's connections finish on it, new ones go to the others)."""
    b1 = backend("b1")
    d = daemon([b1], extra={"workers": 3})
    await asyncio.to_thread(wait_workers, d, 3)
    load = LoadLoop(d.port, clients=24, duration=90).start()
    retired: list[int] = []
    try:
        await load.wait_ok(200)
        for done, count in enumerate((2, 3, 2, 4, 2)):
            before = set(
                (await asyncio.to_thread(admin_json, d, "/api/v1/ha/status"))["workers"]["pids"]
            )
            status = await asyncio.to_thread(_reload, d, count, done)
            pids = status["workers"]["pids"]
            assert len(pids) == count, status["workers"]
            retired += sorted(before - set(pids))
            # Each retired worker exits (it has no slow request to finish) ...
            for pid in retired:
                await asyncio.to_thread(
                    wait_until,
                    lambda pid=pid: _gone(pid),
                    timeout=20,
                    what=f"retired worker {pid} to exit",
                )
            # ... and the master outlives it, still serving.
            assert d.alive(), d.stderr_text()[-2000:]
            await load.wait_ok(load.stats.ok + 200)
    finally:
        stats = await load.stop()
    assert d.alive(), d.stderr_text()[-2000:]
    assert len(retired) == 1 + 1 + 2, retired
    assert not stats.failures, (
        f"{len(stats.failures)} failed of {stats.ok + len(stats.failures)}: "
        f"{[str(f) for f in stats.failures[:10]]}"
    )
    stderr = d.stderr_text()
    assert "Fatal Python error" not in stderr and "master gone" not in stderr, stderr[-2000:]
    status = admin_json(d, "/api/v1/ha/status")
    assert len(status["workers"]["pids"]) == 2 and status["workers"]["restarts"] == 0


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
