#!/usr/bin/env python3
"""req/s of haproxyd with tracing off and on (issue 23's budget: at sample_ratio 0.01,
at most 5 % fewer req/s than off), same backend, same pinning, same run.

One nginx backend (compare.py's, answering `hello\\n`), an OTLP sink accepting every
export (_common.OtlpSink, in this process), and haproxyd with one worker started
afresh for each cell: tracing off, then each `--ratios` value, in an order that
rotates per round so that drift of the host spoils no single cell. The proxy runs on
core 0, nginx and wrk (-t1 -c50) on core 1, as in compare.py. Prints a Markdown table:
best and mean req/s per cell, and the ratio of each mean to the mean with tracing off.
Loopback only; every process started is stopped by PID.

    python3 bench/tracing_cost.py [--ratios 0.01,1] [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LOOPBACK,
    OtlpSink,
    Procs,
    free_port,
    raise_nofile,
    run_wrk,
    wait_http,
    which,
)
from compare import REPO, _haproxyd_env, backend_conf, haproxyd_conf, pinning


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", default="0.01,1", help="sample ratios to run besides off")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 10))
    duration = max(1, min(args.duration, 60))
    cells: list[float | None] = [None, *(float(r) for r in args.ratios.split(",") if r)]
    missing = [tool for tool in ("nginx", "wrk") if not which(tool)]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (apt-get install nginx wrk)")
        return 0
    nofile = raise_nofile()
    proxy_cpus, load_cpus, pin_text = pinning(1)
    tmp = Path(tempfile.mkdtemp(prefix="haproxyd-tracing-cost-"))
    procs = Procs()
    sink = OtlpSink()
    results: dict[float | None, list[float]] = {cell: [] for cell in cells}
    try:
        bport = free_port()
        backend = procs.start(
            "backend",
            ["nginx", "-p", str(tmp), "-e", str(tmp / "err.log"), "-c",
             str(backend_conf(tmp, bport, 1, nofile))],
            str(tmp / "backend.log"),
            cpus=load_cpus,
        )
        wait_http(bport, backend)
        for round_no in range(rounds):
            shift = round_no % len(cells)
            for cell in cells[shift:] + cells[:shift]:
                port = free_port()
                conf = haproxyd_conf(tmp, port, bport, 1, 0)
                if cell is not None:
                    with conf.open("a") as f:
                        f.write(
                            f"tracing: {{enabled: true, sample_ratio: {cell}, "
                            f"endpoint: '{sink.endpoint}'}}\n"
                        )
                proxy = procs.start(
                    "haproxyd",
                    [sys.executable, "-m", "haproxyd", "-c", str(conf)],
                    str(tmp / "haproxyd.log"),
                    cpus=proxy_cpus,
                    cwd=str(REPO),
                    env=_haproxyd_env(),
                )
                try:
                    wait_http(port, proxy, timeout=30)
                    url = f"http://{LOOPBACK}:{port}/"
                    run_wrk(url, 2, args.connections, 1, load_cpus, None)  # warm-up
                    res, _ = run_wrk(url, duration, args.connections, 1, load_cpus, None)
                    if res["errors"]:
                        print(f"  {cell}: {res['errors']} errors", flush=True)
                    results[cell].append(res["req_s"])
                    label = "off" if cell is None else f"on, {cell}"
                    print(f"  round {round_no + 1}, {label}: {res['req_s']:,.0f} req/s",
                          flush=True)
                finally:
                    procs.stop(proxy)
        base = sum(results[None]) / len(results[None])
        print(f"\n{pin_text}; wrk -t1 -c{args.connections}, {duration} s per run, "
              f"{rounds} rounds; spans exported: {sink.requests} requests, {sink.bytes:,} bytes\n")
        print("| tracing | best req/s | mean req/s | mean vs off |")
        print("| --- | ---: | ---: | ---: |")
        for cell in cells:
            runs = results[cell]
            mean = sum(runs) / len(runs)
            label = "off" if cell is None else f"on, sample_ratio {cell}"
            change = 100 * (mean / base - 1)
            print(f"| {label} | {max(runs):,.0f} | {mean:,.0f} | {change:+.1f} % |")
        return 0
    finally:
        procs.stop_all()
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
