"""Turn a Locust run directory into a Markdown report and PNG plots.

    python3 bench/report.py RUN_DIR [--out RUN_DIR/report.md] [--no-plots]

RUN_DIR holds, per scenario NAME, Locust's `--csv NAME --csv-full-history` files
(NAME_stats.csv, NAME_stats_history.csv, NAME_failures.csv) and optionally
NAME_events.json from bench/scenarios.py (the moments of a kill, a restart, the health
transitions, each reload, as Unix times). Written: report.md (a table of every
scenario: requests, failures, req/s, p50/p99; then per scenario its events, what each
cost, and its failures by error) and NAME.png (req/s and failures/s, then p50/p99, over
time, with the events as vertical lines). Plots need matplotlib (the `bench` extra);
without it the Markdown is still written and says so.

Numbers and where they come from:
- the summary row is Locust's own Aggregated line of NAME_stats.csv (whole run);
- req/s and failures/s over time are the differences of the Aggregated "Total Request
  Count" / "Total Failure Count" between consecutive NAME_stats_history.csv rows (one a
  second), so they are exact per interval, not Locust's 10 s moving average;
- p50/p99 over time are the history file's percentile columns, which with
  --csv-full-history are Locust's *current* percentiles over a sliding window of about
  10 s: a latency spike shows as a plateau about 10 s wide, starting at the spike;
- "failures in the next 10 s" of an event sums the per-interval failures from the
  event's second on.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGGREGATED = "Aggregated"
WINDOW = 10.0  # seconds after an event whose failures are counted against it

EVENT_STYLE: dict[str, tuple[str, str]] = {
    # kind: (colour, line style)
    "kill": ("#d62728", "--"),
    "start": ("#2ca02c", "--"),
    "down": ("#ff7f0e", ":"),
    "up": ("#17becf", ":"),
    "reload": ("#7f7f7f", "-"),
}
PLOTTED = set(EVENT_STYLE)


@dataclass
class Sample:
    """One second of a run (from two consecutive history rows)."""

    t: float  # seconds since the run's first history row: the end of the interval
    dt: float  # the interval's length (1 s unless Locust skipped a second)
    users: int
    rps: float
    fails: float
    p50: float | None
    p99: float | None


@dataclass
class Scenario:
    name: str
    summary: dict[str, str]
    samples: list[Sample]
    failures: list[dict[str, str]]
    origin: float  # Unix time of the first history row
    events: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    access_log: Path | None = None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None
    return value


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def history_samples(rows: list[dict[str, str]]) -> tuple[float, list[Sample]]:
    """(origin, samples) from the Aggregated rows of a stats_history file. Rows of the
    same second (Locust stamps int seconds) keep the last one; rates are count
    differences over the time between rows."""
    by_second: dict[int, dict[str, str]] = {}
    for row in rows:
        if row.get("Name") == AGGREGATED:
            by_second[int(float(row["Timestamp"]))] = row
    seconds = sorted(by_second)
    if not seconds:
        return 0.0, []
    origin = float(seconds[0])
    samples = []
    for before, after in itertools.pairwise(seconds):
        a, b = by_second[before], by_second[after]
        dt = after - before
        requests = float(b["Total Request Count"]) - float(a["Total Request Count"])
        failures = float(b["Total Failure Count"]) - float(a["Total Failure Count"])
        p50, p99 = _number(b.get("50%")), _number(b.get("99%"))
        samples.append(
            Sample(
                t=after - origin,
                dt=dt,
                users=int(float(b.get("User Count") or 0)),
                rps=max(0.0, requests) / dt,
                fails=max(0.0, failures) / dt,
                p50=p50 if p50 else None,  # 0 = no sample in the window
                p99=p99 if p99 else None,
            )
        )
    return origin, samples


def load(run_dir: Path) -> list[Scenario]:
    scenarios = []
    for stats in sorted(run_dir.glob("*_stats.csv")):
        name = stats.name.removesuffix("_stats.csv")
        summary = next((r for r in _rows(stats) if r.get("Name") == AGGREGATED), None)
        if summary is None:
            continue
        origin, samples = history_samples(_rows(run_dir / f"{name}_stats_history.csv"))
        events_file = run_dir / f"{name}_events.json"
        meta = json.loads(events_file.read_text()) if events_file.is_file() else {}
        scenarios.append(
            Scenario(
                name=name,
                summary=summary,
                samples=samples,
                failures=_rows(run_dir / f"{name}_failures.csv"),
                origin=origin,
                events=sorted(meta.get("events", []), key=lambda e: e["time"]),
                meta=meta,
                access_log=run_dir / f"{name}_access.log",
            )
        )
    order = {"steady": 0, "failover": 1, "reload": 2}
    return sorted(scenarios, key=lambda s: (order.get(s.name, 9), s.name))


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def failures_after(scenario: Scenario, t: float, window: float = WINDOW) -> int:
    """Failed requests in [t, t + window) seconds of the run (per-interval counts)."""
    total = 0.0
    for sample in scenario.samples:
        # an interval counts where its middle falls
        if t <= sample.t - sample.dt / 2 < t + window:
            total += sample.fails
    return round(total)


def markdown(scenarios: list[Scenario], plots: dict[str, str], note: str = "") -> str:
    lines = ["# Scenario report", ""]
    if note:
        lines += [note, ""]
    lines += [
        "| scenario | duration (s) | users | requests | failures | failure % | req/s "
        "| p50 (ms) | p99 (ms) | events |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in scenarios:
        requests = _number(s.summary.get("Request Count")) or 0
        failures = _number(s.summary.get("Failure Count")) or 0
        share = 100 * failures / requests if requests else None
        duration = s.meta.get("duration") or (s.samples[-1].t if s.samples else None)
        kinds: dict[str, int] = {}
        for e in s.events:
            if e["kind"] in PLOTTED:
                kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        events = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"
        rate = _fmt(_number(s.summary.get("Requests/s")), 1)
        p50, p99 = _fmt(_number(s.summary.get("50%"))), _fmt(_number(s.summary.get("99%")))
        lines.append(
            f"| {s.name} | {_fmt(duration)} | {s.meta.get('users', '-')} | {_fmt(requests)} "
            f"| {_fmt(failures)} | {_fmt(share, 3)} | {rate} | {p50} | {p99} | {events} |"
        )
    for s in scenarios:
        lines += ["", f"## {s.name}", ""]
        if s.name in plots:
            lines += [f"![{s.name}]({plots[s.name]})", ""]
        shown = [e for e in s.events if e["kind"] in PLOTTED]
        if shown:
            lines += [
                f"| t (s) | event | failures in the next {WINDOW:g} s |",
                "|---:|---|---:|",
            ]
            for e in shown:
                t = e["time"] - s.origin
                lines.append(f"| {t:.1f} | {e['label']} | {failures_after(s, t)} |")
            lines.append("")
        detection = detection_times(s)
        if detection:
            lines += [f"Detection: {detection}.", ""]
        if s.failures:
            lines += ["| request | error | count |", "|---|---|---:|"]
            for f in sorted(s.failures, key=lambda r: -int(r.get("Occurrences") or 0)):
                method, name = f.get("Method", ""), f.get("Name", "")
                request = name if name.startswith(f"{method} ") else f"{method} {name}"
                lines.append(f"| {request} | {f.get('Error', '')} | {f.get('Occurrences', '')} |")
            lines.append("")
        else:
            lines += ["No failed requests.", ""]
        proxy_view = access_log_summary(s.access_log)
        if proxy_view:
            lines += [f"haproxyd's access log: {proxy_view}.", ""]
        backends = (s.meta.get("haproxyd") or {}).get("backends")
        if backends:
            shares = ", ".join(f"{b}: {v['requests']:,}" for b, v in sorted(backends.items()))
            lines += [f"Requests per backend (haproxyd's counters): {shares}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def access_log_summary(path: Path | None) -> str:
    """'4,970 requests, 122 served after a retry; 2 x 502 connect_error (1 attempt)'."""
    if path is None or not path.is_file():
        return ""
    total = retried = 0
    problems: dict[tuple[int, str, int], int] = {}
    with path.open() as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            total += 1
            attempts = int(entry.get("attempts") or 1)
            status = int(entry.get("status") or 0)
            if status >= 500 or entry.get("termination") not in (None, "ok"):
                key = (status, str(entry.get("termination")), attempts)
                problems[key] = problems.get(key, 0) + 1
            elif attempts > 1:
                retried += 1
    parts = [f"{total:,} requests, {retried:,} served after a retry"]
    for (status, why, attempts), n in sorted(problems.items(), key=lambda kv: -kv[1]):
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        parts.append(f"{n:,} x {status} {why} ({tries})")
    return "; ".join(parts)


def detection_times(s: Scenario) -> str:
    """'kill -> down 1.8 s, start -> up 2.1 s' from the events, when both are there."""
    parts = []
    for cause, effect in (("kill", "down"), ("start", "up")):
        for e in s.events:
            if e["kind"] != cause:
                continue
            after = next(
                (
                    x
                    for x in s.events
                    if x["kind"] == effect
                    and x.get("target") == e.get("target")
                    and x["time"] >= e["time"]
                ),
                None,
            )
            if after is not None:
                parts.append(f"{cause} → {effect} {after['time'] - e['time']:.1f} s")
    return ", ".join(parts)


def plot(scenario: Scenario, path: Path) -> Any:
    """Draw NAME.png; returns the matplotlib Figure (closed after saving)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, dpi=100)
    t = [s.t for s in scenario.samples]
    middle = [s.t - s.dt / 2 for s in scenario.samples]  # rates belong to their interval
    top.plot(middle, [s.rps for s in scenario.samples], color="#1f77b4", label="req/s")
    top.set_ylabel("requests per second")
    top.set_ylim(bottom=0)
    # Failures are usually a handful against hundreds of requests: their own scale.
    fails = top.twinx()
    fails.bar(
        middle,
        [s.fails for s in scenario.samples],
        width=[0.9 * s.dt for s in scenario.samples],
        color="#d62728",
        alpha=0.6,
        label="failures/s",
    )
    fails.set_ylabel("failures per second", color="#d62728")
    fails.tick_params(axis="y", colors="#d62728")
    fails.set_ylim(0, max([1.0, *(s.fails for s in scenario.samples)]) * 1.15)
    bottom.plot(t, [s.p50 for s in scenario.samples], color="#2ca02c", label="p50")
    bottom.plot(t, [s.p99 for s in scenario.samples], color="#9467bd", label="p99")
    bottom.set_ylabel("latency (ms, ~10 s window)")
    bottom.set_xlabel("seconds since the start of the run")
    bottom.set_ylim(bottom=0)
    labelled: set[str] = set()
    for e in scenario.events:
        if e["kind"] not in PLOTTED:
            continue
        colour, style = EVENT_STYLE[e["kind"]]
        x = e["time"] - scenario.origin
        for axis in (top, bottom):
            axis.axvline(
                x,
                color=colour,
                linestyle=style,
                linewidth=1.2 if e["kind"] != "reload" else 0.8,
                alpha=0.9,
                label=e["kind"] if axis is top and e["kind"] not in labelled else None,
            )
        labelled.add(e["kind"])
        if e["kind"] != "reload":
            top.annotate(
                e["label"],
                xy=(x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                rotation=90,
                va="top",
                fontsize=7,
                color=colour,
            )
    handles, labels = top.get_legend_handles_labels()
    more_handles, more_labels = fails.get_legend_handles_labels()
    top.legend(handles + more_handles, labels + more_labels, loc="lower left", fontsize=8, ncols=4)
    bottom.legend(loc="lower left", fontsize=8, ncols=4)
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
    summary = scenario.summary
    fig.suptitle(
        f"{scenario.name}: {summary.get('Request Count')} requests, "
        f"{summary.get('Failure Count')} failures"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Markdown table and PNG plots of a Locust run")
    ap.add_argument("run_dir", help="directory with NAME_stats.csv, NAME_stats_history.csv, ...")
    ap.add_argument("--out", help="Markdown file (default RUN_DIR/report.md)")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    scenarios = load(run_dir)
    if not scenarios:
        print(f"report: no *_stats.csv with an Aggregated row in {run_dir}", file=sys.stderr)
        return 1
    plots: dict[str, str] = {}
    note = ""
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            note = "(No plots: matplotlib is not installed; `pip install -e '.[bench]'`.)"
        else:
            for s in scenarios:
                if s.samples:
                    plot(s, run_dir / f"{s.name}.png")
                    plots[s.name] = f"{s.name}.png"
    out = Path(args.out) if args.out else run_dir / "report.md"
    out.write_text(markdown(scenarios, plots, note))
    print(f"report: {out}" + (f" and {len(plots)} plot(s)" if plots else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
