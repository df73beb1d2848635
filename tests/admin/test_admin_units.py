"""Pure parts: the event log, the histogram maths, snapshot merging across workers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from haproxyd.admin.api import deep_merge
from haproxyd.admin.metrics import code_class, merge, quantile
from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, Pool
from haproxyd.config.schema import PoolConfig
from haproxyd.config.types import is_loopback
from haproxyd.failover.events import EventLog
from haproxyd.proxy.client import ClientProtocol
from haproxyd.proxy.exchange import Exchange
from haproxyd.proxy.runtime import ProxyRuntime
from haproxyd.proxy.stats import BUCKETS, RequestStats
from haproxyd.proxy.upstream import ProxyPool


def test_event_log_is_bounded_newest_first_and_keeps_totals():
    now = iter(range(100, 200))
    log = EventLog(3, clock=lambda: float(next(now)))
    for i in range(5):
        log.append("failover", "web", f"b{i}", f"reason {i}", strategy="active_passive", n=i)
    log.append("failback", "api", None, "back", strategy="manual")
    assert len(log) == 3 and log.size == 3
    listed = log.list()
    assert [e.reason for e in listed] == ["back", "reason 4", "reason 3"]
    assert [e.id for e in listed] == [6, 5, 4]
    assert listed[1].details == {"strategy": "active_passive", "n": 4}
    assert listed[0].time == 105.0
    assert [e.reason for e in log.list(1)] == ["back"]
    assert [e.reason for e in log.list(pool="web")] == ["reason 4", "reason 3"]
    assert [e.kind for e in log.list(kind="failback")] == ["failback"]
    # totals count what the ring dropped too
    assert log.totals() == {("web", "active_passive"): 5, ("api", "manual"): 1}
    d = listed[2].to_dict()
    assert d["strategy"] == "active_passive" and d["backend"] == "b3"
    json.dumps(d)


def test_event_log_without_strategy_and_subscribers():
    log = EventLog()
    got = []
    stop = log.subscribe(got.append)
    event = log.append("panic", "web", None, "all down")
    stop()
    log.append("panic", "web", None, "again")
    assert got == [event]
    assert log.totals() == {("web", "unknown"): 2}
    with pytest.raises(ValueError):
        EventLog(0)


def test_quantile_interpolates_inside_buckets():
    bounds = [0.1, 0.2, 0.4]
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(0.05)
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.99, bounds, [50, 0, 50, 0]) == pytest.approx(0.2 + 0.2 * 0.98)
    assert quantile(0.99, bounds, [0, 0, 0, 4]) == 0.4  # +Inf bucket: highest bound


def test_code_classes():
    assert [code_class(c) for c in (101, 204, "302", 404, 503, 0, 999)] == [
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "other",
        "other",
    ]


def _exchange(pool, backend, status, start, termination="ok", ended=0.0):
    """A real Exchange (compiled, `observe` takes nothing else) with what `observe`
    reads set; a new (real) pool and backend object each time, hashable by identity."""
    client = ClientProtocol(ProxyRuntime(SimpleNamespace(time=lambda: 0.0)), tls=False)
    exchange = Exchange(client)
    if pool:
        exchange.pool = ProxyPool(pool, PoolConfig(), Pool(pool, create("round_robin")))
    exchange.backend = Backend(backend, "127.0.0.1", 9000) if backend else None
    exchange.status = status
    exchange.start = start
    exchange.termination = termination
    exchange.ended = ended
    return exchange


def test_request_stats_observe_and_snapshot():
    clock = [10.0]
    stats = RequestStats(lambda: clock[0])
    stats.observe(_exchange("web", "a", 200, 9.99))  # 10 ms
    stats.observe(_exchange("web", "a", 502, 9.0, "connect_error"))  # 1 s, proxy's own
    stats.observe(_exchange("web", "a", 500, 9.5))  # backend's own 5xx
    stats.observe(_exchange("web", None, 503, 9.9, "no_backend"))
    stats.observe(_exchange(None, None, 404, 0.0, "no_route"))  # never dispatched
    snap = stats.snapshot()
    json.dumps(snap)
    series = {(s["pool"], s["backend"]): s for s in snap["series"]}
    a = series[("web", "a")]
    assert a["codes"] == {"200": 1, "502": 1, "500": 1}
    assert a["count"] == 3 and a["backend_5xx"] == 1
    assert a["sum"] == pytest.approx(0.01 + 1.0 + 0.5)
    assert sum(a["buckets"]) == 3 and len(a["buckets"]) == len(BUCKETS) + 1
    assert series[("", "")]["count"] == 0 and series[("", "")]["codes"] == {"404": 1}
    stats.forget("web", "a")
    assert ("web", "a") not in stats.series


def test_observe_puts_each_latency_in_the_first_bucket_whose_bound_it_does_not_exceed():
    # Prometheus' `le`: a latency equal to a bound counts in that bound's bucket; past
    # the last bound, in +Inf. Start and end times are binary-exact, so are the latencies.
    stats = RequestStats(lambda: 0.0)
    expected = [0] * (len(BUCKETS) + 1)
    for elapsed, index in (
        (2.0**-12, 0),  # 0.244 ms, under the first bound (0.5 ms)
        (0.25, BUCKETS.index(0.25)),  # exactly on a bound
        (0.25 + 2.0**-20, BUCKETS.index(0.25) + 1),  # just past it
        (1.0, BUCKETS.index(1.0)),
        (60.0, len(BUCKETS) - 1),  # the last bound itself
        (64.0, len(BUCKETS)),  # past every bound: +Inf
    ):
        stats.observe(_exchange("web", "a", 200, 8.0, ended=8.0 + elapsed))
        expected[index] += 1
    assert stats.series[("web", "a")].buckets == expected


def test_observe_indexes_by_object_and_reads_the_end_time():
    stats = RequestStats(lambda: 100.0)
    first = _exchange("web", "a", 200, 9.0, ended=9.25)  # the clock says 100: not read
    stats.observe(first)
    again = _exchange("web", "a", 200, 9.0, ended=9.5)
    again.backend = first.backend  # the same Backend object: found by the index
    stats.observe(again)
    stats.observe(_exchange("web", "a", 503, 0.0))  # another object, same ids
    s = stats.series[("web", "a")]
    assert s.codes == {200: 2, 503: 1} and s.count == 2
    assert s.sum == pytest.approx(0.25 + 0.5)
    stats.forget("web", "a")
    stats.observe(again)  # forgotten: a fresh series, not the dropped one
    assert stats.series[("web", "a")] is not s and stats.series[("web", "a")].count == 1


def test_exemplars_keep_the_last_sampled_trace_per_bucket_and_survive_the_merge():
    one = RequestStats(lambda: 1.0)
    two = RequestStats(lambda: 1.0)
    sampled = _exchange("web", "a", 200, 0.999)  # 1 ms: the second bucket
    sampled.trace = (b"a" * 32, b"b" * 16, None, True)
    unsampled = _exchange("web", "a", 200, 0.999)
    unsampled.trace = (b"c" * 32, b"d" * 16, None, False)
    one.observe(sampled)
    one.observe(unsampled)  # not sampled: no exemplar, the sampled one stays
    two.observe(_exchange("web", "a", 200, 0.5))  # tracing off: none
    exemplars = one.series[("web", "a")].exemplars
    index = next(i for i, e in enumerate(exemplars) if e is not None)
    assert exemplars[index] == (b"a" * 32, pytest.approx(0.001))
    assert sum(e is not None for e in exemplars) == 1
    for order in ([one, two], [two, one]):
        merged = merge([json.loads(json.dumps(s.snapshot())) for s in order])
        (series,) = merged["series"]
        assert series["exemplars"][index] == ["a" * 32, pytest.approx(0.001)]
        assert sum(e is not None for e in series["exemplars"]) == 1


def test_merge_sums_worker_snapshots():
    one = RequestStats(lambda: 1.0)
    two = RequestStats(lambda: 1.0)
    for _ in range(3):
        one.observe(_exchange("web", "a", 200, 0.999))
    two.observe(_exchange("web", "a", 200, 0.5))
    two.observe(_exchange("web", "b", 404, 0.5))
    pools = [
        SimpleNamespace(
            name="web",
            state=SimpleNamespace(
                backends={
                    "a": SimpleNamespace(id="a", active=2, requests=5, failures=1, selections=5)
                }
            ),
            upstreams={"a": SimpleNamespace(connects=3)},
        )
    ]
    merged = merge([one.snapshot(pools), json.loads(json.dumps(two.snapshot(pools)))])
    series = {(s["pool"], s["backend"]): s for s in merged["series"]}
    assert series[("web", "a")]["codes"] == {"200": 4}
    assert series[("web", "a")]["count"] == 4
    assert sum(series[("web", "a")]["buckets"]) == 4
    assert series[("web", "b")]["codes"] == {"404": 1}
    [b] = merged["backends"]
    assert (b["active"], b["sent"], b["failures"], b["selections"]) == (4, 10, 2, 10)
    assert b["connects"] == 6
    bad = one.snapshot()
    bad["bounds"] = [1.0]
    with pytest.raises(ValueError):
        merge([one.snapshot(), bad])
    assert merge([])["series"] == []


def test_deep_merge_merges_objects_and_replaces_lists():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = deep_merge(base, {"a": {"c": [3], "e": None}, "f": {"g": 1}})
    assert out == {"a": {"b": 1, "c": [3], "e": None}, "d": 1, "f": {"g": 1}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("admin.example", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback
