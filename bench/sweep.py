#!/usr/bin/env python3
"""Throughput and tail latency against concurrency: haproxyd, nginx and haproxy in one run.

    python bench/sweep.py                          # 10, 50, 200, 400, 1000 connections
    python bench/sweep.py --levels 50,400 --plot sweep.png --json sweep.json

The same setup as bench/compare.py (one nginx backend, each proxy with one worker on
core 0, backend and wrk on core 1; its configs and start-up are compare.py's own), then
for every concurrency level wrk on the small response against each proxy in turn (the
order alternates from level to level). Prints req/s and p99 per proxy and level with the
ratios to nginx, and with --plot draws both against connections (matplotlib, from the
`bench` extra). Every process started here is stopped by PID on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import compare
from _common import LOOPBACK, WRK_LUA, Procs, free_port, raise_nofile, run_wrk, wait_http, which

LEVELS = (10, 50, 200, 400, 1000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)),
                    help="comma list of wrk connection counts (each 1-10000)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (1-60)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    ap.add_argument("--only", default=",".join(compare.PEERS), help="proxies to run")
    ap.add_argument("--plot", metavar="PNG", help="draw req/s and p99 against connections")
    ap.add_argument("--json", metavar="FILE", help="write every number to FILE")
    o = ap.parse_args(argv)
    o.levels = [max(1, min(int(x), 10000)) for x in o.levels.split(",") if x.strip()]
    o.only = [p for p in (x.strip() for x in o.only.split(",")) if p]
    if bad := [p for p in o.only if p not in compare.PEERS]:
        ap.error(f"unknown proxy {bad}")
    o.duration = max(1, min(o.duration, 60))
    o.warmup = max(0, min(o.warmup, 30))
    # What compare.start_peer reads besides these; its configs size their connection
    # limits as idle_conns + 4000.
    o.workers, o.idle_conns, o.wrk_threads = 1, max(o.levels), 1
    return o


def sweep(o: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, dict[int, dict]]:
    proxy_cpus, load_cpus, pin_text = compare.pinning(1)
    print(f"pinning: {pin_text}", flush=True)
    lua = tmp / "report.lua"
    lua.write_text(WRK_LUA)
    bport = free_port()
    bconf = compare.backend_conf(tmp, bport, 1, o.nofile)
    backend = procs.start("backend", [which("nginx"), "-p", str(tmp), "-e",
                                      str(tmp / "backend-error.log"), "-c", str(bconf)],
                          str(tmp / "backend.log"), cpus=load_cpus)
    wait_http(bport, backend, timeout=15)
    results: dict[str, dict[int, dict]] = {p: {} for p in o.only}
    started = {}
    try:
        for peer in o.only:
            started[peer] = compare.start_peer(procs, peer, tmp, bport, o, proxy_cpus)
        for n, level in enumerate(o.levels):
            order = o.only if n % 2 == 0 else list(reversed(o.only))
            for peer in order:
                _, port = started[peer]
                url = f"http://{LOOPBACK}:{port}/"
                if o.warmup:
                    run_wrk(url, o.warmup, level, 1, load_cpus, str(lua))
                r, _ = run_wrk(url, o.duration, level, 1, load_cpus, str(lua))
                results[peer][level] = r
                print(f"c={level:5d} {peer:9s} {r['req_s']:9,.0f} req/s  p99 "
                      f"{r['p99_ms']:8.2f} ms  errors {r['errors']}", flush=True)
    finally:
        for p, _ in started.values():
            procs.stop(p)
    return results


def table(results: dict[str, dict[int, dict]], levels: list[int]) -> str:
    peers = list(results)
    head = ["connections", *(f"{p} req/s" for p in peers), *(f"{p} p99 ms" for p in peers)]
    if "nginx" in results and "haproxyd" in results:
        head += ["haproxyd/nginx req/s", "haproxyd/nginx p99"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for level in levels:
        got = {p: results[p].get(level) for p in peers}
        cells = [str(level)]
        cells += [f"{got[p]['req_s']:,.0f}" if got[p] else "-" for p in peers]
        cells += [f"{got[p]['p99_ms']:.1f}" if got[p] else "-" for p in peers]
        d, n = got.get("haproxyd"), got.get("nginx")
        if "nginx" in results and "haproxyd" in results:
            cells += [f"{d['req_s'] / n['req_s']:.2f}x", f"{d['p99_ms'] / n['p99_ms']:.2f}x"] if (
                d and n and n["req_s"] and n["p99_ms"]) else ["-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results: dict[str, dict[int, dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for peer, by_level in results.items():
        levels = sorted(by_level)
        left.plot(levels, [by_level[c]["req_s"] for c in levels], marker="o", label=peer)
        right.plot(levels, [by_level[c]["p99_ms"] for c in levels], marker="o", label=peer)
    for ax, what in ((left, "req/s (one core)"), (right, "p99 latency (ms)")):
        ax.set_xscale("log")
        ax.set_xlabel("keep-alive connections (wrk)")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.legend()
    right.set_yscale("log")
    fig.suptitle("small responses, proxy pinned to one core")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    o.nofile = raise_nofile()
    for tool in ("nginx", "wrk"):
        if which(tool) is None:
            print(f"error: {tool} is required: apt-get install {tool}", file=sys.stderr)
            return 2
    o.only = [p for p in o.only if not compare.installed(p)]

    def on_term(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_term)
    _common.NICE = 0
    tmp = Path(tempfile.mkdtemp(prefix="haproxyd-sweep-"))
    procs = Procs()
    print(f"# concurrency sweep — {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"{os.cpu_count()} cores; levels {o.levels}", flush=True)
    try:
        results = sweep(o, procs, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + table(results, o.levels))
    if o.json:
        Path(o.json).write_text(json.dumps(
            {p: {str(c): {k: v for k, v in r.items() if k != "raw"} for c, r in by.items()}
             for p, by in results.items()}, indent=1))
    if o.plot:
        try:
            plot(results, o.plot)
            print(f"plot: {o.plot}")
        except ImportError:
            print("no plot: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
