#!/usr/bin/env python3
"""Throughput and tail latency against concurrency: haproxyd, nginx and haproxy in one run.

    python bench/sweep.py                          # 10, 50, 200, 400, 1000 connections
    python bench/sweep.py --levels 50,400 --plot sweep.png --json sweep.json
    python bench/sweep.py --mode close             # a new client connection per request
    python bench/sweep.py --mode tls-resume        # a resumed TLS handshake per request
    python bench/sweep.py --mode tls-keepalive     # TLS on keep-alive connections

Modes (the same proxies, configs and pinning; only the client side changes):
`keepalive` (default) wrk on keep-alive connections; `close` wrk with
`Connection: close`, so every proxy closes after each response and wrk reconnects, while
the backend side stays keep-alive (counted around each run: connections accepted on
the machine, /proc/net/snmp PassiveOpens, and TIME-WAIT sockets on the backend's port);
`tls-resume` the same over TLS on each proxy's listener, wrk resuming the session on
each reconnect (checked first with a probe that offers each connection the previous
one's session, then counted in wrk itself: a small preloaded library counts its resumed
and full handshakes); `tls-keepalive` TLS on keep-alive connections.

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
from _common import (
    LOOPBACK,
    WRK_LUA,
    Procs,
    build_tls_counter,
    free_port,
    passive_opens,
    raise_nofile,
    run_wrk,
    time_wait_count,
    tls_resume_probe,
    tree_cpu_seconds,
    wait_http,
    which,
)

LEVELS = (10, 50, 200, 400, 1000)
MODES = ("keepalive", "close", "tls-resume", "tls-keepalive")
CLOSE_LEVELS = (50,)  # default for the connection-per-request modes (ports, TIME-WAIT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="keepalive",
                    help="client side: keep-alive, a new connection per request, a resumed "
                         "TLS handshake per request, or TLS keep-alive")
    ap.add_argument("--levels", default=None,
                    help="comma list of wrk connection counts (each 1-10000; default "
                         f"{','.join(map(str, LEVELS))}, or {','.join(map(str, CLOSE_LEVELS))}"
                         " for close and tls-resume)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (1-60)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    ap.add_argument("--only", default=",".join(compare.PEERS), help="proxies to run")
    ap.add_argument("--plot", metavar="PNG", help="draw req/s and p99 against connections")
    ap.add_argument("--json", metavar="FILE", help="write every number to FILE")
    o = ap.parse_args(argv)
    if o.levels is None:
        o.levels = ",".join(map(str, CLOSE_LEVELS if closes(o.mode) else LEVELS))
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


def closes(mode: str) -> bool:
    """Whether the mode opens a client connection per request."""
    return mode in ("close", "tls-resume")


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
    o.tls = compare.make_cert(tmp) if o.mode.startswith("tls") else None
    scheme = "https" if o.tls else "http"
    headers = ("Connection: close",) if closes(o.mode) else ()
    counter = build_tls_counter(tmp) if o.tls else None
    if o.tls and counter is None:
        print("no C compiler: wrk's handshakes are not counted (the probe still runs)")
    started = {}
    o.probes = {}
    try:
        for peer in o.only:
            started[peer] = compare.start_peer(procs, peer, tmp, bport, o, proxy_cpus)
            if o.tls:
                o.probes[peer] = probe = {
                    "tls1.3": tls_resume_probe(started[peer][1], 20),
                    "tls1.2": tls_resume_probe(started[peer][1], 20, max_tls12=True),
                }
                print(f"{peer:9s} resumption probe: " + "; ".join(
                    f"{k} {v['resumed']}/{v['connections'] - 1} resumed"
                    + (f" ({v['error']})" if v["error"] else "") for k, v in probe.items()),
                    flush=True)
        for n, level in enumerate(o.levels):
            order = o.only if n % 2 == 0 else list(reversed(o.only))
            for peer in order:
                _, port = started[peer]
                url = f"{scheme}://{LOOPBACK}:{port}/"
                if o.warmup:
                    run_wrk(url, o.warmup, level, 1, load_cpus, str(lua), headers=headers)
                proc = started[peer][0]
                c0, b0 = passive_opens(), time_wait_count(bport)
                t0, cpu0 = time.monotonic(), tree_cpu_seconds(proc.popen.pid)
                r, _ = run_wrk(url, o.duration, level, 1, load_cpus, str(lua), headers=headers,
                               tls_counter=counter)
                c1, b1 = passive_opens(), time_wait_count(bport)
                r["proxy_cpu_pct"] = 100 * (tree_cpu_seconds(proc.popen.pid) - cpu0) / (
                    time.monotonic() - t0)
                if b0 is not None and b1 is not None:
                    # accepted on the machine, less the backend's (each of which closes
                    # into a TIME-WAIT on its port): the proxy's client connections
                    r["backend_closed"] = b1 - b0
                    r["client_accepted"] = c1 - c0 - r["backend_closed"]
                results[peer][level] = r
                extra = (f"  conns accepted: client ~{r['client_accepted']:,}, backend closed "
                         f"{r['backend_closed']:,}" if "client_accepted" in r else "")
                if "tls_full" in r:
                    extra += (f"  TLS handshakes: {r['tls_resumed']:,} resumed, "
                              f"{r['tls_full']:,} full")
                print(f"c={level:5d} {peer:9s} {r['req_s']:9,.0f} req/s  p99 "
                      f"{r['p99_ms']:8.2f} ms  cpu {r['proxy_cpu_pct']:3.0f}%  errors "
                      f"{r['errors']}{extra}", flush=True)
    finally:
        for p, _ in started.values():
            procs.stop(p)
    return results


def _x(a: dict | None, b: dict | None, key: str) -> str:
    return f"{a[key] / b[key]:.2f}x" if a and b and b.get(key) else "-"


def _cpu(r: dict | None) -> str:
    """The proxy's CPU % and its CPU microseconds per request: on a busy machine the
    second moves far less than req/s, since other load slows the proxy and its client
    alike."""
    if not r or "proxy_cpu_pct" not in r:
        return "-"
    us = 1e4 * r["proxy_cpu_pct"] / r["req_s"] if r["req_s"] else 0.0
    return f"{r['proxy_cpu_pct']:.0f} ({us:,.0f})"


def table(results: dict[str, dict[int, dict]], levels: list[int]) -> str:
    """req/s and p99 per proxy and level, the ratios of haproxyd to each peer, and, where
    the runs counted them, client connections closed per request and backend ones."""
    peers = list(results)
    peers_of = [p for p in ("nginx", "haproxy") if p in results and "haproxyd" in results]
    counted = any("client_accepted" in r for by in results.values() for r in by.values())
    head = ["connections", *(f"{p} req/s" for p in peers), *(f"{p} p99 ms" for p in peers),
            *(f"{p} CPU % (µs/req)" for p in peers)]
    for peer in peers_of:
        head += [f"haproxyd/{peer} req/s", f"haproxyd/{peer} p99"]
    if counted:
        head += [f"{p} client conns per req / backend conns closed" for p in peers]
    handshakes = any("tls_full" in r for by in results.values() for r in by.values())
    if handshakes:
        head += [f"{p} TLS resumed / full" for p in peers]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for level in levels:
        got = {p: results[p].get(level) for p in peers}
        cells = [str(level)]
        cells += [f"{got[p]['req_s']:,.0f}" if got[p] else "-" for p in peers]
        cells += [f"{got[p]['p99_ms']:.1f}" if got[p] else "-" for p in peers]
        cells += [_cpu(got[p]) for p in peers]
        for peer in peers_of:
            cells += [_x(got["haproxyd"], got[peer], "req_s"),
                      _x(got["haproxyd"], got[peer], "p99_ms")]
        if counted:
            for p in peers:
                r = got[p]
                cells.append(f"{r['client_accepted'] / max(1, r['requests']):.2f} / "
                             f"{r['backend_closed']:,}" if r and "client_accepted" in r
                             and "requests" in r else "-")
        if handshakes:
            cells += [f"{got[p]['tls_resumed']:,} / {got[p]['tls_full']:,}"
                      if got[p] and "tls_full" in got[p] else "-" for p in peers]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def notes(results: dict[str, dict[int, dict]], o: argparse.Namespace) -> list[str]:
    """What the counts and the probe say about the mode really being measured."""
    out = []
    for peer, by in results.items():
        for level, r in by.items():
            if o.mode == "tls-resume" and "tls_full" in r and (
                    r["tls_full"] > max(level, r["tls_resumed"] // 100)):
                out.append(f"{peer} c={level}: {r['tls_full']:,} full TLS handshakes for "
                           f"{r['tls_resumed']:,} resumed: the sessions were not resumed")
            if "client_accepted" not in r or not r.get("requests"):
                continue
            per = r["client_accepted"] / r["requests"]
            if closes(o.mode) and per < 0.9:
                out.append(f"{peer} c={level}: only {per:.2f} client connections accepted per "
                           f"request: it did not close after each response")
            if not closes(o.mode) and r["client_accepted"] > 2 * level + 500:
                out.append(f"{peer} c={level}: ~{r['client_accepted']:,} client connections "
                           f"accepted on keep-alive (other load on the machine counts too)")
            if r["backend_closed"] > max(10, r["requests"] // 100):
                out.append(f"{peer} c={level}: {r['backend_closed']:,} backend connections "
                           f"closed for {r['requests']:,} requests: the backend side churns")
    idle = [f"{peer} c={level} {r['proxy_cpu_pct']:.0f}%" for peer, by in results.items()
            for level, r in by.items() if r.get("proxy_cpu_pct", 100) < 90]
    if idle:
        out.append("proxy core under 90 % busy, so that proxy was not the bottleneck (the "
                   "load core or other load on the machine was) and its ratios are of the "
                   "load, not of the proxy: " + ", ".join(idle))
    for peer, probe in getattr(o, "probes", {}).items():
        for version, v in probe.items():
            if v["error"] or v["resumed"] < v["connections"] - 1:
                out.append(f"{peer}: {version} resumption probe: {v['resumed']} of "
                           f"{v['connections'] - 1} resumed {v['error']}".rstrip())
    return out


def plot(results: dict[str, dict[int, dict]], path: str, mode: str = "keepalive") -> None:
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
    fig.suptitle(f"small responses, proxy pinned to one core ({mode})")
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
          f"{os.cpu_count()} cores; mode {o.mode}; levels {o.levels}", flush=True)
    try:
        results = sweep(o, procs, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + table(results, o.levels))
    for note in notes(results, o):
        print(f"- {note}")
    if o.json:
        Path(o.json).write_text(json.dumps(
            {"mode": o.mode, "probes": getattr(o, "probes", {}),
             "results": {p: {str(c): {k: v for k, v in r.items() if k != "raw"}
                             for c, r in by.items()} for p, by in results.items()}},
            indent=1))
    if o.plot:
        try:
            plot(results, o.plot, o.mode)
            print(f"plot: {o.plot}")
        except ImportError:
            print("no plot: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
