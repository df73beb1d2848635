"""The scheduler: rise/fall, intervals, jitter, admin states, agents, reloads, node checks.

Backends are real aiohttp servers and raw TCP agents; intervals are tens of
milliseconds and every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from types import SimpleNamespace

import pytest
from health_helpers import Stub, closed_port, hc, make_pool, pool_config, wait_until

from haproxyd.balancer.state import Backend, BackendState
from haproxyd.health.scheduler import HealthScheduler
from haproxyd.health.session import Session

FAST = dict(interval=0.05, timeout=0.5, jitter=0.0)


def http(**fields):
    return hc("http", **{**FAST, **fields})


def session_of(scheduler, pool="web", backend=None):
    statuses = scheduler.statuses(pool, backend)
    assert len(statuses) == 1, statuses
    return statuses[0]


async def verdicts_applied():
    """The verdicts of one loop iteration refresh their pools at its end (one rebuild
    for a burst, see HealthScheduler._reconcile): let that iteration finish."""
    await asyncio.sleep(0)


async def started(scheduler, pools, configs, node_checks=None):
    scheduler.update(pools, configs, node_checks)
    await scheduler.start()
    return scheduler


async def test_new_backend_takes_traffic_only_after_first_pass(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    b = pool.backends["web-0"]
    scheduler = scheduler_factory()
    events = []
    scheduler.subscribe(events.append)
    scheduler.update({"web": pool}, {"web": pool_config([http(interval=0.2)])})
    assert b.state == BackendState.CHECKING
    assert pool.selectable == ()
    await scheduler.start()
    await wait_until(lambda: b.state == BackendState.UP, 3, "first pass")
    await verdicts_applied()
    assert pool.selectable == (b,)
    assert len(stub.requests) == 1
    (event,) = events
    assert (event.pool, event.backend, event.check, event.old, event.new) == (
        "web",
        "web-0",
        "http",
        "checking",
        "up",
    )
    assert event.state == "up" and event.reason == "HTTP 200" and event.latency > 0


async def test_init_state_up(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    scheduler = scheduler_factory()
    scheduler.update({"web": pool}, {"web": pool_config([http(init_state="up")])})
    assert pool.backends["web-0"].state == BackendState.UP


async def test_fall_and_rise_thresholds(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    b = pool.backends["web-0"]
    scheduler = scheduler_factory()
    seen = []
    # Requests the stub had received when each transition was reported.
    scheduler.subscribe(lambda e: seen.append((e.new, len(stub.requests))))
    await started(scheduler, {"web": pool}, {"web": pool_config([http(rise=2, fall=3)])})
    await wait_until(lambda: b.state == BackendState.UP, 3, "up")

    stub.status = 500
    flipped = len(stub.requests)
    await wait_until(lambda: b.state == BackendState.DOWN, 3, "down")
    assert seen[-1] == ("down", flipped + 3)  # exactly `fall` failed probes
    status = session_of(scheduler)
    assert status.status == "down" and status.consecutive_fails >= 3
    assert status.last_reason == "HTTP 500, expected 200"

    stub.status = 200
    flipped = len(stub.requests)
    await wait_until(lambda: b.state == BackendState.UP, 3, "up again")
    assert seen[-1] == ("up", flipped + 2)  # exactly `rise` passes
    assert [s for s, _ in seen] == ["up", "down", "up"]


async def test_killed_backend_is_detected_and_readmitted(http_backend, scheduler_factory):
    stub = await http_backend()
    other = await http_backend()
    pool = make_pool("web", [stub.port, other.port])
    b = pool.backends["web-0"]
    scheduler = scheduler_factory()
    config = http(rise=2, fall=2, timeout=0.2)
    await started(scheduler, {"web": pool}, {"web": pool_config([config])})
    await wait_until(lambda: len(pool.selectable) == 2, 3, "both up")

    port = stub.port
    await http_backend.stop(stub)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await wait_until(lambda: b.state == BackendState.DOWN, 3, "detection")
    # The bound of the benchmark: interval x fall + timeout + 0.5 s.
    assert loop.time() - killed_at <= 0.05 * 2 + 0.2 + 0.5
    await verdicts_applied()
    assert pool.selectable == (pool.backends["web-1"],)
    assert "HTTP request failed" in session_of(scheduler, backend="web-0").last_reason

    revived = await http_backend(Stub(), port=port)
    await wait_until(lambda: b.state == BackendState.UP, 3, "back after rise passes")
    assert len(revived.requests) >= 2
    await verdicts_applied()
    assert len(pool.selectable) == 2


async def test_probe_timeout(tcp_server, scheduler_factory):
    port = await tcp_server(lambda reader, writer: asyncio.sleep(30))
    pool = make_pool("db", [port])
    scheduler = scheduler_factory()
    config = hc("tcp", expect="never", interval=0.05, timeout=0.1, fall=1, jitter=0.0)
    await started(scheduler, {"db": pool}, {"db": pool_config([config])})
    await wait_until(lambda: pool.backends["db-0"].state == BackendState.DOWN, 3, "timeout")
    status = session_of(scheduler, "db")
    assert status.last_reason == "timeout after 0.1s"
    assert status.last_latency == pytest.approx(0.1)


def fake_session(config, status="up", passes=0, fails=0):
    session = Session(("p", "b", "a", "k"), None, None, config, status, 0.0)
    session.passes, session.fails = passes, fails
    return session


def test_interval_rules():
    scheduler = HealthScheduler(rng=random.Random(1))
    config = hc("tcp", interval=2.0, down_interval=10.0, fast_interval=0.5, jitter=0.0)
    assert scheduler.base_interval(fake_session(config, "checking")) == 0.5
    assert scheduler.base_interval(fake_session(config, "up")) == 2.0
    assert scheduler.base_interval(fake_session(config, "up", fails=1)) == 0.5
    assert scheduler.base_interval(fake_session(config, "down")) == 10.0
    assert scheduler.base_interval(fake_session(config, "down", passes=1)) == 0.5
    plain = hc("tcp", interval=2.0, jitter=0.0)
    assert scheduler.base_interval(fake_session(plain, "down")) == 2.0
    assert scheduler.base_interval(fake_session(plain, "checking")) == 2.0


def test_jitter_bounds_and_first_probe_spread():
    scheduler = HealthScheduler(rng=random.Random(42))
    session = fake_session(hc("tcp", interval=1.0, jitter=0.2))
    delays = [scheduler.next_delay(session) for _ in range(2000)]
    assert 0.8 <= min(delays) < 0.82 and 1.18 < max(delays) <= 1.2
    firsts = sorted(scheduler.first_delay(session) for _ in range(1000))
    assert firsts[0] < 0.01 and firsts[-1] > 0.99
    # Roughly uniform: each tenth of the interval gets 5-15% of the starts.
    for tenth in range(10):
        share = sum(tenth / 10 <= d < (tenth + 1) / 10 for d in firsts) / 1000
        assert 0.05 < share < 0.15


async def test_first_probes_are_spread_over_the_interval(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port] * 20)
    scheduler = scheduler_factory(rng=random.Random(7))
    firsts = []
    scheduler.subscribe(lambda e: firsts.append(e.time))
    await started(scheduler, {"web": pool}, {"web": pool_config([http(interval=0.5)])})
    await wait_until(lambda: len(firsts) == 20, 3, "20 first probes")
    spread = max(firsts) - min(firsts)
    assert spread > 0.25, spread  # not one burst: spread over most of the interval
    gaps = sorted(b - a for a, b in zip(sorted(firsts), sorted(firsts)[1:], strict=False))
    assert gaps[len(gaps) // 2] > 0.002  # the median gap between starts is not zero


async def test_down_interval(http_backend, scheduler_factory):
    stub = await http_backend(Stub(status=500))
    pool = make_pool("web", [stub.port])
    scheduler = scheduler_factory()
    config = http(interval=0.05, down_interval=0.25, fall=1)
    await started(scheduler, {"web": pool}, {"web": pool_config([config])})
    await wait_until(lambda: len(stub.requests) >= 4, 5, "probes while down")
    times = [t for t, _, _ in stub.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.24 for gap in gaps), gaps
    assert session_of(scheduler).interval == 0.25


async def test_update_keeps_state_of_unchanged_checks(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    scheduler = scheduler_factory()
    events = []
    scheduler.subscribe(events.append)
    await started(scheduler, {"web": pool}, {"web": pool_config([http(path="/a")])})
    await wait_until(lambda: session_of(scheduler).checks_total >= 3, 3, "a few probes")
    before = session_of(scheduler)

    # Same check, new timing: same session, counters and history kept.
    scheduler.update({"web": pool}, {"web": pool_config([http(path="/a", interval=0.06)])})
    after = session_of(scheduler)
    assert after.last_change == before.last_change
    assert after.checks_total >= before.checks_total
    assert after.interval == 0.06
    assert pool.backends["web-0"].state == BackendState.UP
    assert len(events) == 1

    # A new check on a backend that is up starts up: a reload never drops traffic.
    scheduler.update({"web": pool}, {"web": pool_config([http(path="/a"), http(path="/b")])})
    assert {s.status for s in scheduler.statuses("web")} == {"up"}
    assert pool.backends["web-0"].state == BackendState.UP
    await wait_until(lambda: any(p == "/b" for _, p, _ in stub.requests), 3, "/b probed")

    # Rebuilt pool objects (same ids and addresses) inherit the verdict at once.
    stub.status = 500
    await wait_until(lambda: pool.backends["web-0"].state == BackendState.DOWN, 3, "down")
    new_pool = make_pool("web", [stub.port])
    assert new_pool.backends["web-0"].state == BackendState.UP
    scheduler.update({"web": new_pool}, {"web": pool_config([http(path="/a")])})
    assert new_pool.backends["web-0"].state == BackendState.DOWN


async def test_update_with_a_bad_check_changes_nothing(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    scheduler = scheduler_factory()
    scheduler.update({"web": pool}, {"web": pool_config([http()])})
    # Validation normally refuses this; the scheduler must still refuse it atomically.
    bad = SimpleNamespace(type="custom_script", command=[], env={})
    with pytest.raises(ValueError, match="custom_script"):
        scheduler.update({"web": pool}, {"web": pool_config([http(), bad])})
    assert len(scheduler.statuses("web")) == 1


async def test_backends_added_and_removed_at_run_time(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    scheduler = scheduler_factory()
    await started(scheduler, {"web": pool}, {"web": pool_config([http()])})
    added = Backend("web-new", "127.0.0.1", stub.port)
    pool.add(added)  # as the admin API does; the default state is UP
    assert added.state == BackendState.CHECKING
    await wait_until(lambda: added.state == BackendState.UP, 3, "the new backend up")
    pool.remove("web-0")
    assert [s.backend for s in scheduler.statuses("web")] == ["web-new"]


async def test_maint_is_not_probed_and_resumes(http_backend, scheduler_factory):
    stub, other = await http_backend(), await http_backend()
    pool = make_pool("web", [stub.port, other.port])
    b = pool.backends["web-0"]
    scheduler = scheduler_factory()
    await started(scheduler, {"web": pool}, {"web": pool_config([http()])})
    await wait_until(lambda: len(pool.selectable) == 2, 3, "both up")

    pool.set_state("web-0", BackendState.MAINT)
    await wait_until(lambda: session_of(scheduler, backend="web-0").paused, 3, "paused")
    assert session_of(scheduler, backend="web-0").status == "checking"
    count, other_count = len(stub.requests), len(other.requests)
    await wait_until(lambda: len(other.requests) >= other_count + 5, 3, "five more intervals")
    assert len(stub.requests) == count  # no probe while in maintenance
    assert scheduler.verdict("web", "web-0") == BackendState.CHECKING

    pool.set_state("web-0", scheduler.verdict("web", "web-0"))  # the operator's "ready"
    await wait_until(lambda: b.state == BackendState.UP, 3, "up after the first pass")


async def test_draining_is_probed_but_stays_draining(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    b = pool.backends["web-0"]
    scheduler = scheduler_factory()
    await started(scheduler, {"web": pool}, {"web": pool_config([http(fall=1, rise=1)])})
    await wait_until(lambda: b.state == BackendState.UP, 3, "up")
    pool.set_state("web-0", BackendState.DRAINING)
    stub.status = 500
    await wait_until(lambda: session_of(scheduler).status == "down", 3, "health down")
    assert b.state == BackendState.DRAINING
    assert scheduler.verdict("web", "web-0") == BackendState.DOWN
    stub.status = 200
    await wait_until(lambda: session_of(scheduler).status == "up", 3, "health up")
    assert b.state == BackendState.DRAINING  # a pass never ends an operator's drain
    assert scheduler.verdict("web", "web-0") == BackendState.UP


async def test_agent_sets_weight_and_admin_state(tcp_server, scheduler_factory):
    reply = {"line": b"up 50%\n"}

    async def agent(reader, writer):
        writer.write(reply["line"])
        await writer.drain()

    port = await tcp_server(agent)
    pool = make_pool("app", [port], weight=4)
    b = pool.backends["app-0"]
    scheduler = scheduler_factory()
    events = []
    scheduler.subscribe(events.append)
    config = hc("system_metrics", interval=0.03, timeout=0.5, jitter=0.0, rise=1, fall=1)
    await started(scheduler, {"app": pool}, {"app": pool_config([config])})
    await wait_until(lambda: b.state == BackendState.UP and b.effective_weight == 2, 3, "50%")
    assert b.weight == 4

    reply["line"] = b"drain\n"
    await wait_until(lambda: b.state == BackendState.DRAINING, 3, "agent drain")
    reply["line"] = b"ready 100%\n"
    await wait_until(lambda: b.state == BackendState.UP and b.effective_weight == 4, 3, "ready")

    reply["line"] = b"maint\n"
    await wait_until(lambda: b.state == BackendState.MAINT, 3, "agent maint")
    reply["line"] = b"ready\n"  # the agent check keeps running in its own maintenance
    await wait_until(lambda: b.state == BackendState.UP, 3, "ready after maint")
    assert [(e.old, e.new) for e in events if e.reason.startswith("agent requested")] == [
        ("up", "draining"),
        ("draining", "up"),
        ("up", "maint"),
        ("maint", "up"),
    ]

    # An operator's drain outranks the agent's "ready".
    pool.set_state("app-0", BackendState.DRAINING)
    probes = session_of(scheduler, "app").checks_total
    await wait_until(lambda: session_of(scheduler, "app").checks_total >= probes + 3, 3, "probes")
    assert b.state == BackendState.DRAINING

    reply["line"] = b"down#disk full\n"
    await wait_until(lambda: session_of(scheduler, "app").status == "down", 3, "agent down")
    assert session_of(scheduler, "app").last_reason == "agent says down: disk full"


async def test_bounded_concurrency(http_backend, scheduler_factory):
    stub = await http_backend(Stub(delay=0.05))
    pool = make_pool("web", [stub.port] * 8)
    scheduler = scheduler_factory(max_concurrency=2)
    await started(scheduler, {"web": pool}, {"web": pool_config([http(interval=0.01)])})
    await wait_until(lambda: len(stub.requests) >= 12, 5, "a dozen probes")
    assert stub.max_active == 2


async def test_node_checks(tmp_path, scheduler_factory):
    scheduler = scheduler_factory(node_id="node-7")
    events = []
    scheduler.subscribe(events.append)
    node_checks = [
        hc("memory_usage", max_percent=0.001, interval=0.03, fall=1, jitter=0.0),
        hc("disk_space", path=str(tmp_path), min_free_bytes=1, interval=0.03, jitter=0.0),
    ]
    await started(scheduler, {}, {}, node_checks)
    assert scheduler.node_healthy  # checking counts as healthy: no shedding at start
    await wait_until(lambda: not scheduler.node_healthy, 3, "node unhealthy")
    health = scheduler.node_status()
    assert not health.healthy
    (reason,) = health.reasons
    assert reason.startswith("memory_usage <= 0.001%: memory ")
    memory = next(e for e in events if e.check == "memory_usage")
    assert memory.node and memory.backend == "node-7" and memory.new == "down"
    assert {c.type for c in scheduler.statuses() if c.node} == {"memory_usage", "disk_space"}

    scheduler.update({}, {}, [node_checks[1]])
    assert scheduler.node_healthy


async def test_node_check_types_are_refused_on_pools(scheduler_factory):
    scheduler = scheduler_factory()
    pool = make_pool("web", [closed_port()])
    with pytest.raises(ValueError, match="node check"):
        scheduler.update({"web": pool}, {"web": pool_config([hc("memory_usage")])})


async def test_subscribers(http_backend, scheduler_factory):
    stub = await http_backend()
    pool = make_pool("web", [stub.port])
    scheduler = scheduler_factory()
    got = []

    def broken(event):
        raise RuntimeError("subscriber bug")

    async def slow(event):
        await asyncio.sleep(0)
        got.append(("async", event.new))

    scheduler.subscribe(broken)
    scheduler.subscribe(slow)
    unsubscribe = scheduler.subscribe(lambda e: got.append(("sync", e.new)))
    unsubscribe()
    await started(scheduler, {"web": pool}, {"web": pool_config([http()])})
    await wait_until(lambda: got, 3, "the async subscriber")
    assert got == [("async", "up")]
    assert scheduler.events()[0].new == "up"


def test_the_timing_fields_are_the_schemas_common_check_fields():
    from haproxyd.config.sections.health import CheckBase
    from haproxyd.health.base import TIMING_FIELDS
    from haproxyd.health.session import Timing

    assert {f.name for f in dataclasses.fields(Timing)} == set(CheckBase.model_fields)
    assert set(CheckBase.model_fields) == TIMING_FIELDS
    config = hc("tcp", interval=2.0, rise=4, init_state="up")
    timing = Timing.of(config)
    assert (timing.interval, timing.rise, timing.init_state) == (2.0, 4, "up")


def test_node_capable_check_classes_are_the_schemas_node_check_types():
    import haproxyd.health.checks  # noqa: F401  (registers every check class)
    from haproxyd.health.base import NODE_ONLY_TYPES, NODE_TYPES, REGISTRY

    assert {t for t, cls in REGISTRY.items() if cls.node_capable} == NODE_TYPES
    assert {t for t, cls in REGISTRY.items() if not cls.backend_capable} == NODE_ONLY_TYPES
