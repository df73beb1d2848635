"""The HTTP/2 rows of bench/compare.py (issue 22): h2load against each proxy.

Two modes, each proxy started afresh for each with a listener that speaks it:

- `h2`: TLS with ALPN `h2,http/1.1` offered by h2load (nginx `listen ... ssl http2`,
  haproxy `bind ... ssl crt ... alpn h2,http/1.1`, haproxyd a `tls:` listener);
- `h2c`: cleartext with prior knowledge (nginx `listen ... http2`, haproxy
  `bind ... proto h2`, haproxyd a plain listener, whose `http2` defaults to true).

The backend stays compare.py's HTTP/1.1 nginx, the pinning compare.py's (the proxy on
its core, the backend and h2load on the load core). A proxy that does not speak the
mode (ALPN chose http/1.1, or the prior-knowledge preface was refused) gets a note
saying so instead of a row, and the run goes on. Stdlib only; compare.py supplies the
processes and the configs (`start_h2_peer`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import _preexec, log_tail, percentile, tree_cpu_seconds, which

MODES = ("h2", "h2c")
# What h2load's "Application protocol:" line says when the mode was spoken.
SPOKEN = {"h2": "h2", "h2c": "h2c"}
MUST_RATIO = 0.25  # issue 22: h2 req/s at least 0.25x nginx per core (goal 0.5x)


class NoH2(Exception):
    """The proxy answered, but not in the mode asked for (the message says how)."""


def h2load_argv(
    url: str, mode: str, seconds: int, clients: int, streams: int, threads: int,
    log_file: str | None = None, requests: int | None = None,
) -> list[str]:
    """h2load for one run: timed (`-D`) or, with `requests`, a count (`-n`)."""
    argv = ["h2load", f"-c{clients}", f"-m{streams}", f"-t{threads}"]
    argv += [f"-n{requests}"] if requests else [f"-D{seconds}"]
    if mode == "h2":
        argv.append("--npn-list=h2,http/1.1")  # so that a proxy without h2 says so
    if log_file:
        argv.append(f"--log-file={log_file}")
    return [*argv, url]


def parse_h2load(out: str) -> dict[str, Any]:
    """h2load's summary: protocol, req_s, requests done/succeeded/failed/errored/timeout,
    2xx count, bytes and the mean request time (ms)."""
    r: dict[str, Any] = {}
    m = re.search(r"^Application protocol: (\S+)", out, re.M)
    r["protocol"] = m.group(1) if m else ""
    m = re.search(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out, re.M)
    if m:
        r["req_s"] = float(m.group(3))
    m = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout", out, re.M)
    if m:
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        r.update({k: int(v) for k, v in zip(keys, m.groups(), strict=True)})
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        r["status_2xx"] = int(m.group(1))
        r["status_other"] = sum(int(x) for x in m.groups()[1:])
    m = re.search(r"^traffic: [^(]*\((\d+)\) total", out, re.M)
    r["bytes"] = int(m.group(1)) if m else 0
    r["errors"] = r.get("failed", 0) + r.get("errored", 0) + r.get("timeout", 0) + r.get(
        "status_other", 0)
    return r


def verdict(mode: str, res: dict[str, Any]) -> str | None:
    """None when the run spoke `mode` and got answers; else why not, in a few words."""
    proto = res.get("protocol") or "none"
    if mode == "h2" and proto != "h2":
        return f"no h2 (ALPN chose {proto})"
    if not res.get("succeeded"):
        if mode == "h2c":
            return (f"no h2c (prior-knowledge preface refused: 0 of {res.get('total', 0)} "
                    f"requests answered)")
        return f"no answers over {proto} ({res.get('errored', 0)} errored)"
    return None


def log_latencies_ms(path: Path) -> list[float]:
    """Per-request times (ms) from h2load's --log-file (start µs, status, duration µs)."""
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].strip().isdigit():
                out.append(int(parts[2]) / 1e3)
    out.sort()
    return out


def run_h2load(url: str, mode: str, o: Any, cpus: set[int] | None, seconds: int,
               log_file: str | None = None, requests: int | None = None) -> tuple[dict, str]:
    """One h2load run (one thread, on `cpus`); a count of requests runs on one connection."""
    clients, streams = (1, 1) if requests else (o.h2_clients, o.h2_streams)
    argv = h2load_argv(url, mode, seconds, clients, streams, 1, log_file, requests)
    if cpus and which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                        preexec_fn=_preexec(None))
    out = cp.stdout + cp.stderr
    res = parse_h2load(out)
    if cp.returncode != 0 and not res.get("total"):
        raise RuntimeError(f"h2load failed ({cp.returncode}): {out.strip()[-500:]}")
    return res, out


def probe(port: int, mode: str, o: Any, cpus: set[int] | None) -> None:
    """A few requests before the load: raise NoH2 if the mode is not spoken."""
    url = f"{'https' if mode == 'h2' else 'http'}://127.0.0.1:{port}/"
    res, _ = run_h2load(url, mode, o, cpus, seconds=10, requests=20)
    why = verdict(mode, res)
    if why:
        raise NoH2(why)


def measure(p: Any, port: int, mode: str, o: Any, load_cpus: set[int] | None,
            tmp: Path) -> dict:
    """Warm-up, then one timed h2load run; req/s, p50/p99 from the per-request log,
    the proxy's CPU."""
    url = f"{'https' if mode == 'h2' else 'http'}://127.0.0.1:{port}/"
    if o.warmup:
        run_h2load(url, mode, o, load_cpus, seconds=o.warmup)
    log = Path(tempfile.mkstemp(prefix=f"h2load-{mode}-", suffix=".log", dir=tmp)[1])
    try:
        t0, c0 = time.monotonic(), tree_cpu_seconds(p.popen.pid)
        res, _ = run_h2load(url, mode, o, load_cpus, o.duration, str(log))
        wall = time.monotonic() - t0
        res["proxy_cpu_pct"] = 100 * (tree_cpu_seconds(p.popen.pid) - c0) / wall
        # CPU per request moves far less with the load core's limits than req/s does.
        res["cpu_us_per_req"] = res["proxy_cpu_pct"] * 1e4 / res["req_s"] if res.get(
            "req_s") else 0.0
        lat = log_latencies_ms(log)
    finally:
        log.unlink(missing_ok=True)
    res["p50_ms"], res["p99_ms"] = percentile(lat, 50), percentile(lat, 99)
    why = verdict(mode, res)
    if why:
        raise NoH2(why)
    if p.popen.poll() is not None:
        raise RuntimeError(f"{p.name} died during the {mode} run:\n{log_tail(p.log_path)}")
    return res


def run_rows(peers: list[str], o: Any, start: Callable[[str, str], tuple[Any, int]],
             stop: Callable[[Any], None], load_cpus: set[int] | None, tmp: Path) -> dict:
    """Every mode, `o.rounds` rounds in alternating order: {mode: {peer: [result]}} and
    the notes (peers that do not speak a mode, failures)."""
    results: dict[str, dict[str, list[dict]]] = {m: {p: [] for p in peers} for m in o.h2_modes}
    notes: dict[str, dict[str, str]] = {m: {} for m in o.h2_modes}
    for mode in o.h2_modes:
        for rnd in range(o.rounds):
            for peer in peers if rnd % 2 == 0 else list(reversed(peers)):
                if peer in notes[mode]:
                    continue
                p = None
                try:
                    p, port = start(peer, mode)
                    probe(port, mode, o, load_cpus)
                    r = measure(p, port, mode, o, load_cpus, tmp)
                    results[mode][peer].append(r)
                    print(f"{mode} round {rnd + 1} {peer:9s} {r['req_s']:9,.0f} req/s p50 "
                          f"{r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms cpu "
                          f"{r['proxy_cpu_pct']:3.0f}% | errors {r['errors']}", flush=True)
                except NoH2 as e:
                    notes[mode][peer] = str(e)
                    print(f"{mode} round {rnd + 1} {peer}: {e}", flush=True)
                except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as e:
                    notes[mode][peer] = f"FAILED: {str(e).splitlines()[0] if str(e) else '?'}"
                    print(f"{mode} round {rnd + 1} {peer}: FAILED: {e}", flush=True)
                finally:
                    if p is not None:
                        stop(p)
    return {"results": results, "notes": notes}


def _best(runs: list[dict]) -> dict | None:
    return max(runs, key=lambda r: r["req_s"]) if runs else None


def table(h2: dict, peers: list[str], load: str) -> str:
    """The h2 rows: per mode, each proxy's best round and haproxyd's ratios, the issue's
    "at least 0.25x nginx" check; then a line per proxy that did not speak the mode."""
    head = ["mode", *peers, "haproxyd/nginx", "haproxyd/haproxy",
            f"must reach (issue 22: ≥ {MUST_RATIO:g}x nginx)"]
    lines = [f"h2load {load}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    extra = []
    for mode, by_peer in h2["results"].items():
        best = {p: _best(by_peer.get(p, [])) for p in peers}
        for key, label, fmt in (("req_s", "req/s", "{:,.0f}"), ("p50_ms", "p50 ms", "{:.2f}"),
                                ("p99_ms", "p99 ms", "{:.2f}"),
                                ("proxy_cpu_pct", "proxy CPU %", "{:.0f}"),
                                ("cpu_us_per_req", "proxy CPU µs/req", "{:.0f}")):
            row = [f"{mode}: {label}"]
            for p in peers:
                b = best[p]
                why = h2["notes"][mode].get(p, "-")
                row.append(fmt.format(b[key]) if b else why.split(" (")[0].split(":")[0])
            a = best.get("haproxyd")
            for other in ("nginx", "haproxy"):
                o = best.get(other)
                row.append(f"{a[key] / o[key]:.2f}x" if a and o and o[key] else "-")
            if key == "req_s":
                n = best.get("nginx")
                row.append("-" if not (a and n) else
                           ("PASS" if a["req_s"] >= MUST_RATIO * n["req_s"] else "FAIL"))
            else:
                row.append("")
            lines.append("| " + " | ".join(row) + " |")
        for p, why in h2["notes"][mode].items():
            extra.append(f"- {p}: {why} ({mode})")
    return "\n".join(lines + (["", *extra] if extra else []))
