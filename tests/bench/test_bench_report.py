"""bench/report.py on a tiny synthetic Locust run: the Markdown numbers, the per-second
rates from the history file, the cost of each event, and the PNG with the events drawn
as vertical lines (matplotlib: skipped when it is absent)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import scenarios  # noqa: E402

PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
STATS_COLUMNS = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time",
    "Average Response Time", "Min Response Time", "Max Response Time",
    "Average Content Size", "Requests/s", "Failures/s", *PERCENTILES,
]  # fmt: skip
HISTORY_COLUMNS = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENTILES,
    "Total Request Count", "Total Failure Count", "Total Median Response Time",
    "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
    "Total Average Content Size",
]  # fmt: skip
ORIGIN = 1_800_000_000
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install -e '.[bench]')",
)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="0")
        writer.writeheader()
        writer.writerows(rows)


def history_row(second: int, total: int, failed: int, p50: object, p99: object) -> dict:
    return {
        "Timestamp": ORIGIN + second, "User Count": 5, "Type": "", "Name": "Aggregated",
        "Requests/s": "99.0", "Failures/s": "0.0", "50%": p50, "99%": p99,
        "Total Request Count": total, "Total Failure Count": failed,
    }  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A 10 s 'failover' run: 100 req/s, 3 failures in second 5, p99 up after the kill."""
    endpoint = {"Type": "GET", "Name": "GET /", "Request Count": 1000, "Failure Count": 3}
    total = {**endpoint, "Type": "", "Name": "Aggregated", "Requests/s": "100.02"}
    write_csv(
        tmp_path / "failover_stats.csv", STATS_COLUMNS, [endpoint, {**total, "50%": 4, "99%": 20}]
    )
    rows: list[dict[str, object]] = []
    for second in range(11):
        failed = 3 if second >= 5 else 0
        p99 = 20 if second >= 5 else 8
        rows.append({**history_row(second, second * 100, failed, 4, p99), "Name": "GET /"})
        rows.append(history_row(second, second * 100, failed, "N/A" if second == 0 else 4, p99))
    # Locust stamps whole seconds: two rows in one second, the later one counts.
    rows.insert(3, history_row(1, 50, 0, 4, 8))
    write_csv(tmp_path / "failover_stats_history.csv", HISTORY_COLUMNS, rows)
    write_csv(
        tmp_path / "failover_failures.csv",
        ["Method", "Name", "Error", "Occurrences"],
        [{"Method": "GET", "Name": "GET /", "Error": "status 502", "Occurrences": 3}],
    )
    events = [
        {"time": ORIGIN + 0.2, "kind": "load", "label": "first request"},
        {"time": ORIGIN + 4.5, "kind": "kill", "label": "b2 killed", "target": "b2"},
        {"time": ORIGIN + 5.2, "kind": "down", "label": "b2 down", "target": "b2"},
        {"time": ORIGIN + 7.0, "kind": "start", "label": "b2 started", "target": "b2"},
        {"time": ORIGIN + 8.5, "kind": "up", "label": "b2 up", "target": "b2"},
        {"time": ORIGIN + 9.0, "kind": "reload", "label": "reload ok"},
    ]
    meta = {"scenario": "failover", "duration": 10, "users": 5, "events": events}
    (tmp_path / "failover_events.json").write_text(json.dumps(meta))
    access = [
        {"status": 200, "attempts": 1, "termination": "ok"},
        {"status": 200, "attempts": 2, "termination": "ok"},
        {"status": 502, "attempts": 1, "termination": "connect_error"},
    ]
    (tmp_path / "failover_access.log").write_text("".join(json.dumps(a) + "\n" for a in access))
    return tmp_path


def test_rates_are_per_second_differences(run_dir: Path) -> None:
    [scenario] = report.load(run_dir)
    assert scenario.origin == ORIGIN
    assert [s.t for s in scenario.samples] == list(range(1, 11))
    assert all(s.rps == 100 for s in scenario.samples)  # the duplicate second is dropped
    assert [s.fails for s in scenario.samples] == [0, 0, 0, 0, 3, 0, 0, 0, 0, 0]
    assert scenario.samples[3].p99 == 8 and scenario.samples[4].p99 == 20
    assert report.failures_after(scenario, 4.5) == 3
    assert report.failures_after(scenario, 5.2) == 0


def test_markdown_table_and_event_costs(run_dir: Path) -> None:
    assert report.main([str(run_dir), "--no-plots"]) == 0
    text = (run_dir / "report.md").read_text()
    assert (
        "| failover | 10 | 5 | 1,000 | 3 | 0.300 | 100.0 | 4 | 20 "
        "| 1 kill, 1 down, 1 start, 1 up, 1 reload |"
    ) in text
    assert "| 4.5 | b2 killed | 3 |" in text
    assert "| 7.0 | b2 started | 0 |" in text
    assert "first request" not in text  # bookkeeping events are not listed
    assert "kill → down 0.7 s, start → up 1.5 s" in text
    assert "| GET / | status 502 | 3 |" in text
    assert "3 requests, 1 served after a retry; 1 x 502 connect_error (1 attempt)" in text
    assert not list(run_dir.glob("*.png"))


@needs_matplotlib
def test_png_marks_every_event(run_dir: Path) -> None:
    [scenario] = report.load(run_dir)
    figure = report.plot(scenario, run_dir / "failover.png")
    png = (run_dir / "failover.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    top = figure.axes[0]
    vertical = sorted(
        round(line.get_xdata()[0], 3)
        for line in top.get_lines()
        if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
    )
    assert vertical == [4.5, 5.2, 7.0, 8.5, 9.0]
    assert report.main([str(run_dir)]) == 0
    assert "![failover](failover.png)" in (run_dir / "report.md").read_text()


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    assert report.main([str(tmp_path)]) == 1


def test_scenario_plans_are_bounded() -> None:
    class Args:
        duration = 20
        reload_every = 3.0

    run = scenarios.Run("failover", Path("."), Args())  # type: ignore[arg-type]
    assert [a for _, a in scenarios.plan(run, 100.0)] == ["kill", "restart"]
    assert [t for t, _ in scenarios.plan(run, 100.0)] == [107.0, 113.0]
    run.name = "reload"
    moments = [t for t, _ in scenarios.plan(run, 0.0)]
    assert len(moments) == 5 and moments[0] == 2.0 and moments[-1] < 20
    run.name = "steady"
    assert scenarios.plan(run, 0.0) == []
