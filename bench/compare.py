#!/usr/bin/env python3
"""haproxyd vs nginx vs haproxy, same backend, same pinning, same run (issue 2 §6).

    python bench/compare.py                        # 1 worker each, 10 s runs, 2 rounds
    python bench/compare.py --only nginx,haproxy   # peers only
    python bench/compare.py --workers 2 --json out.json

One nginx backend (fixed 6-byte body and a 1 MiB static file, keep-alive) on an
ephemeral loopback port; then each proxy in turn with one worker, proxy on core 0,
backend + wrk on core 1; wrk -t1 -c50 against small and 1 MiB responses, rounds in
alternating order; in the last round, RSS of each proxy holding 10,000 idle keep-alive
client connections. Prints a Markdown table with the ratios haproxyd/nginx and
haproxyd/haproxy. `--h2` adds the HTTP/2 rows (h2load over TLS+ALPN h2 and h2c, see
h2bench.py). Every process started here is stopped by PID on exit (Ctrl-C too).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import h2bench
from _common import (
    LOOPBACK,
    WRK_LUA,
    Proc,
    Procs,
    busy_seconds,
    children_cpu_seconds,
    core_ticks,
    free_port,
    http_get,
    log_tail,
    raise_nofile,
    run_wrk,
    self_cpu_seconds,
    tree_cpu_seconds,
    tree_rss_kib,
    wait_http,
    wait_listening,
    wait_quiet,
    which,
)

REPO = Path(__file__).resolve().parent.parent
PEERS = ("haproxyd", "nginx", "haproxy")
SMALL_BODY = "hello\n"
LARGE_PATH = "/static/1m.bin"
LARGE_SIZE = 1 << 20
IDLE_TIMEOUT_S = 600  # every proxy keeps idle client connections at least this long
OTHER_CPU_WARN = 10  # % of a core used by processes not ours during a run: disturbed


# --------------------------------------------------------------------------- configs


def _nginx_common(tmp: Path, name: str, workers: int, conns: int, nofile: int):
    user = "user root;\n" if os.geteuid() == 0 else ""
    t = tmp / f"{name}-tmp"
    t.mkdir(exist_ok=True)
    return f"""{user}daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections {conns}; multi_accept on; }}
""", t


def backend_conf(tmp: Path, port: int, workers: int, nofile: int) -> Path:
    head, t = _nginx_common(tmp, "backend", workers, min(16384, nofile - 100), nofile)
    www = tmp / "www"
    (www / "static").mkdir(parents=True, exist_ok=True)
    (www / "static" / "1m.bin").write_bytes(os.urandom(LARGE_SIZE))
    conf = tmp / "backend.conf"
    conf.write_text(
        head
        + f"""http {{
  access_log off;
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout {IDLE_TIMEOUT_S}s; keepalive_requests 100000000;
  server {{
    listen {LOOPBACK}:{port} backlog=4096;
    root {www};
    location /static/ {{ default_type application/octet-stream; }}
    location / {{ default_type text/plain; return 200 "{SMALL_BODY.strip()}\\n"; }}
  }}
}}
"""
    )
    return conf


def make_cert(tmp: Path) -> dict[str, str]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (openssl), one for all proxies.

    Returns the paths: cert, key, and both in one file (haproxy's `crt`).
    """
    cert, key, both = tmp / "tls-cert.pem", tmp / "tls-key.pem", tmp / "tls-both.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         f"/CN={LOOPBACK}", "-addext", f"subjectAltName=IP:{LOOPBACK}"],
        check=True, capture_output=True, timeout=30,
    )
    both.write_text(cert.read_text() + key.read_text())
    return {"cert": str(cert), "key": str(key), "both": str(both)}


# TLS alike on the three listeners: TLS 1.2 and 1.3, the library's default ciphers, the
# same certificate, stateless session tickets on and a server-side session cache (both
# are OpenSSL's defaults in haproxyd's ssl.SSLContext and in haproxy; nginx needs its
# cache named), so a client offering a ticket or a session ID resumes on any of them.
def _nginx_tls(tls: dict[str, str] | None) -> str:
    if not tls:
        return ""
    return (f"    ssl_certificate {tls['cert']}; ssl_certificate_key {tls['key']};\n"
            f"    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;\n"
            f"    ssl_session_cache shared:bench:20m; ssl_session_timeout 10m;\n")


def nginx_proxy_conf(tmp: Path, port: int, bport: int, workers: int, idle: int, nofile: int,
                     tls: dict[str, str] | None = None, listen_extra: str = ""):
    # nginx's worker_connections counts upstream connections too (haproxy's maxconn and
    # haproxyd's max_connections count client ones): with a request in flight on each of
    # `idle` client connections it holds as many upstream ones.
    conns = min(2 * idle + 4000, nofile - 100)
    reuse = " reuseport" if workers > 1 else ""
    head, t = _nginx_common(tmp, "nginx", workers, conns, nofile)
    conf = tmp / "nginx-proxy.conf"
    conf.write_text(
        head
        + f"""http {{
  access_log off;
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  tcp_nodelay on;
  keepalive_timeout {IDLE_TIMEOUT_S}s; keepalive_requests 100000000;
  upstream be {{
    server {LOOPBACK}:{bport};
    keepalive 4096; keepalive_requests 100000000; keepalive_timeout {IDLE_TIMEOUT_S}s;
  }}
  server {{
    listen {LOOPBACK}:{port} backlog=4096{reuse}{" ssl" if tls else ""}{listen_extra};
{_nginx_tls(tls)}    location / {{
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffers 64 16k; proxy_max_temp_file_size 0;  # stream 1 MiB, no disk
    }}
  }}
}}
"""
    )
    return conf


def haproxy_conf(tmp: Path, port: int, bport: int, workers: int, idle: int, nofile: int,
                 tls: dict[str, str] | None = None, bind_extra: str = ""):
    conf = tmp / "haproxy.cfg"
    maxconn = idle + 4000
    conf.write_text(
        f"""global
  nbthread {workers}
  no strict-limits
  maxconn {maxconn}
  ulimit-n {nofile}
  pidfile {tmp}/haproxy.pid
  ssl-default-bind-options ssl-min-ver TLSv1.2
  tune.ssl.cachesize 100000

defaults
  mode http
  option http-keep-alive
  http-reuse always
  maxconn {maxconn}
  timeout connect 5s
  timeout client {IDLE_TIMEOUT_S}s
  timeout server 60s
  timeout http-request {IDLE_TIMEOUT_S}s
  timeout http-keep-alive {IDLE_TIMEOUT_S}s

frontend fe
  bind {LOOPBACK}:{port}{f" ssl crt {tls['both']}" if tls else ""}{bind_extra}
  default_backend be

backend be
  server b1 {LOOPBACK}:{bport}
"""
    )
    return conf


def haproxyd_conf(tmp: Path, port: int, bport: int, workers: int, idle: int,
                  tls: dict[str, str] | None = None) -> Path:
    conf = tmp / "haproxyd.yaml"
    tls_line = f"\n    tls: {{cert: {tls['cert']}, key: {tls['key']}}}" if tls else ""
    conf.write_text(
        f"""# written by bench/compare.py
listeners:
  - address: {LOOPBACK}:{port}{tls_line}
admin:
  address: {LOOPBACK}:{free_port()}
workers: {workers}
timeouts:
  connect: 5s
  response: 60s
  idle: {IDLE_TIMEOUT_S}s
  client_header: {IDLE_TIMEOUT_S}s
  shutdown: 1s
limits: {{max_connections: {idle + 4000}}}
access_log: {{enabled: false}}
pools:
  web:
    backends:
      - {{id: b1, address: {LOOPBACK}:{bport}}}
"""
    )
    return conf


# --------------------------------------------------------------------------- peers


def installed(peer: str) -> str | None:
    """None if the peer can run here, else why not."""
    if peer == "haproxyd":
        if find_spec("haproxyd") is None and not (REPO / "haproxyd" / "__init__.py").exists():
            return "package haproxyd not importable (pip install -e .)"
        return None
    if which(peer) is None:
        return f"{peer} not installed (apt-get install {peer})"
    return None


def version(peer: str) -> str:
    try:
        if peer == "haproxyd":
            cp = subprocess.run([sys.executable, "-m", "haproxyd", "version"], cwd=REPO,
                                env=_haproxyd_env(), capture_output=True, text=True, timeout=20)
        elif peer == "wrk":
            cp = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        elif peer == "h2load":
            cp = subprocess.run(["h2load", "--version"], capture_output=True, text=True,
                                timeout=10)
        else:
            cp = subprocess.run([which(peer) or peer, "-v"], capture_output=True, text=True,
                                timeout=10)
        text = (cp.stdout + cp.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _haproxyd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for k in ("NODE_ID", "DISCOVERY_SERVERS", "QUORUM_SIZE", "HAPROXYD_ADMIN_TOKEN"):
        env.pop(k, None)
    return env


def start_peer(procs: Procs, peer: str, tmp: Path, bport: int, o: argparse.Namespace,
               cpus: set[int] | None) -> tuple[Proc, int]:
    port = free_port()
    log = str(tmp / f"{peer}.log")
    tls = getattr(o, "tls", None)  # make_cert()'s paths: a TLS listener
    if peer == "haproxyd":
        conf = haproxyd_conf(tmp, port, bport, o.workers, o.idle_conns, tls)
        p = procs.start(peer, [sys.executable, "-m", "haproxyd", "-c", str(conf)], log,
                        cpus=cpus, cwd=str(REPO), env=_haproxyd_env())
    elif peer == "nginx":
        conf = nginx_proxy_conf(tmp, port, bport, o.workers, o.idle_conns, o.nofile, tls)
        p = procs.start(peer, [which("nginx"), "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                               "-c", str(conf)], log, cpus=cpus)
    elif peer == "haproxy":
        conf = haproxy_conf(tmp, port, bport, o.workers, o.idle_conns, o.nofile, tls)
        p = procs.start(peer, [which("haproxy"), "-db", "-f", str(conf)], log, cpus=cpus)
    else:
        raise ValueError(peer)
    try:
        wait_http(port, p, timeout=30, tls=bool(tls))
        status, body = http_get(port, "/", tls=bool(tls))
        if status != 200 or body != SMALL_BODY.encode():
            raise RuntimeError(f"{peer}: GET / gave {status} {body[:80]!r}")
        status, body = http_get(port, LARGE_PATH, timeout=10, tls=bool(tls))
        if status != 200 or len(body) != LARGE_SIZE:
            raise RuntimeError(f"{peer}: GET {LARGE_PATH} gave {status}, {len(body)} bytes")
    except BaseException:
        procs.stop(p)
        raise
    return p, port


# HTTP/2 listeners (issue 22; nginx 1.22 takes `http2` on `listen`, 1.25.1+ also
# `http2 on;`): over TLS by ALPN, or cleartext with prior knowledge (h2c). haproxyd's
# listeners offer h2 by default (`tls.alpn: [h2, http/1.1]`, `http2: true`).
H2_NGINX_LISTEN = {"h2": " http2", "h2c": " http2"}
H2_HAPROXY_BIND = {"h2": " alpn h2,http/1.1", "h2c": " proto h2"}


def start_h2_peer(procs: Procs, peer: str, mode: str, tmp: Path, bport: int,
                  o: argparse.Namespace, cpus: set[int] | None) -> tuple[Proc, int]:
    """A proxy with one listener for `mode` (`h2`: TLS, `h2c`: cleartext), accepting."""
    port = free_port()
    log = str(tmp / f"{peer}-{mode}.log")
    tls = o.h2_tls if mode == "h2" else None
    if peer == "haproxyd":
        conf = haproxyd_conf(tmp, port, bport, o.workers, o.idle_conns, tls)
        p = procs.start(peer, [sys.executable, "-m", "haproxyd", "-c", str(conf)], log,
                        cpus=cpus, cwd=str(REPO), env=_haproxyd_env())
    elif peer == "nginx":
        conf = nginx_proxy_conf(tmp, port, bport, o.workers, o.idle_conns, o.nofile, tls,
                                H2_NGINX_LISTEN[mode])
        p = procs.start(peer, [which("nginx"), "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                               "-c", str(conf)], log, cpus=cpus)
    elif peer == "haproxy":
        conf = haproxy_conf(tmp, port, bport, o.workers, o.idle_conns, o.nofile, tls,
                            H2_HAPROXY_BIND[mode])
        p = procs.start(peer, [which("haproxy"), "-db", "-f", str(conf)], log, cpus=cpus)
    else:
        raise ValueError(peer)
    try:
        wait_listening(port, p, timeout=30)
    except BaseException:
        procs.stop(p)
        raise
    return p, port


# --------------------------------------------------------------------------- measuring


def measure_load(p: Proc, port: int, o: argparse.Namespace, load_cpus, lua,
                 backend: Proc | None, watch: set[int] | None) -> dict:
    """Warm up, then wrk on the small and the 1 MiB path.

    Besides wrk's figures: proxy_cpu_pct (CPU of p's process tree) and other_cpu_pct,
    CPU on the watched cores not used by our processes there (p, and the backend and
    wrk when they share those cores): a lower bound of the disturbance from other load.
    """
    url = f"http://{LOOPBACK}:{port}"
    out: dict = {}
    if o.wait_quiet:
        busy = wait_quiet(min(o.wait_quiet, 600))
        out["busy_before_pct"] = busy
        if busy >= 10:
            print(f"  (machine still {busy:.0f}% busy after waiting {o.wait_quiet}s)", flush=True)
    if o.warmup:
        run_wrk(url + "/", o.warmup, o.connections, o.wrk_threads, load_cpus, lua)
    shared = watch is None or load_cpus is None or bool(watch & load_cpus)
    others = [x for x in (backend,) if x is not None and x is not p]

    def cpu_of(procs_: list[Proc]) -> float:
        return sum(tree_cpu_seconds(x.popen.pid) for x in procs_)

    for key, path in (("small", "/"), ("large", LARGE_PATH)):
        t0, k0 = time.monotonic(), core_ticks()
        p0, b0, w0 = cpu_of([p]), cpu_of(others), children_cpu_seconds() + self_cpu_seconds()
        res, raw = run_wrk(url + path, o.duration, o.connections, o.wrk_threads, load_cpus, lua)
        k1, wall = core_ticks(), time.monotonic() - t0
        dp = cpu_of([p]) - p0
        dl = cpu_of(others) - b0 + children_cpu_seconds() + self_cpu_seconds() - w0
        res["proxy_cpu_pct"] = 100 * dp / wall
        # other load: CPU on our cores that none of our processes used (a lower bound)
        if shared:
            res["other_cpu_pct"] = max(0.0, 100 * (busy_seconds(k0, k1, watch) - dp - dl) / wall)
            res["other_load_core_pct"] = res["other_cpu_pct"]
        else:
            res["other_cpu_pct"] = max(0.0, 100 * (busy_seconds(k0, k1, watch) - dp) / wall)
            res["other_load_core_pct"] = max(
                0.0, 100 * (busy_seconds(k0, k1, load_cpus) - dl) / wall)
        res["raw"] = raw
        out[key] = res
        if p.popen.poll() is not None:
            raise RuntimeError(f"{p.name} died during the {key} run:\n{log_tail(p.log_path)}")
    return out


def measure_idle(procs: Procs, p: Proc, port: int, o: argparse.Namespace, tmp: Path,
                 load_cpus) -> dict:
    time.sleep(1.0)  # let wrk's connections close
    before, nproc = tree_rss_kib(p.popen.pid)
    helper = procs.start(
        "idle-holder",
        [sys.executable, str(Path(__file__).resolve().parent / "_common.py"), "hold-idle",
         str(port), str(o.idle_conns)],
        str(tmp / "idle-holder.log"), cpus=load_cpus, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        line = _readline(helper, timeout=120)
        opened = json.loads(line)
        time.sleep(2.0)  # let the proxy settle (buffers freed, pools trimmed)
        samples = []
        for _ in range(3):
            samples.append(tree_rss_kib(p.popen.pid)[0])
            time.sleep(0.5)
        helper.popen.stdin.write(b"check\n")
        helper.popen.stdin.flush()
        alive = json.loads(_readline(helper, timeout=30))["alive"]
        inflight = _burst(helper, p, o.inflight_rounds) if o.inflight_rounds else None
        helper.popen.stdin.write(b"close\n")
        helper.popen.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            helper.popen.wait(30)
    finally:
        procs.stop(helper)
    after = max(samples)
    return {
        "rss_before_kib": before, "rss_kib": after, "processes": nproc,
        "requested": o.idle_conns, "opened": opened["opened"], "ok": opened["ok"],
        "failed": opened["failed"], "open_seconds": opened["seconds"], "alive": alive,
        "per_conn_bytes": (after - before) * 1024 / max(1, opened["opened"]),
        "inflight": inflight,
    }


def _burst(helper: Proc, p: Proc, rounds: int) -> dict:
    """Have the holder put a request on every connection at once, `rounds` times.

    The proxy's RSS is sampled every 0.1 s meanwhile (the peak is kept), then the holder
    says which connections are still open. Bounded: 20 rounds of at most 30 s each.
    """
    import selectors

    rounds = max(1, min(rounds, 20))
    helper.popen.stdin.write(f"burst {rounds}\n".encode())
    helper.popen.stdin.flush()
    sel = selectors.DefaultSelector()
    sel.register(helper.popen.stdout, selectors.EVENT_READ)
    peak = 0
    deadline = time.monotonic() + rounds * 30 + 10
    while not sel.select(0.1):
        peak = max(peak, tree_rss_kib(p.popen.pid)[0])
        if time.monotonic() > deadline:
            raise RuntimeError(f"in-flight bursts: no answer within {rounds * 30 + 10} s")
        if p.popen.poll() is not None:
            raise RuntimeError(f"{p.name} died during the in-flight bursts:\n"
                               f"{log_tail(p.log_path)}")
    res = json.loads(_readline(helper, timeout=1))
    helper.popen.stdin.write(b"check\n")
    helper.popen.stdin.flush()
    res["alive_after"] = json.loads(_readline(helper, timeout=30))["alive"]
    res["rss_peak_kib"] = peak
    return res


def _readline(p: Proc, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.popen.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise RuntimeError(f"{p.name}: no answer within {timeout:.0f}s")
    line = p.popen.stdout.readline().decode()
    if not line:
        raise RuntimeError(f"{p.name} exited:\n{log_tail(p.log_path)}")
    return line


# --------------------------------------------------------------------------- report


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(results: dict, rss: dict, how: str = "best") -> dict:
    """Per proxy: the best round (highest req/s, resp. MiB/s) or the mean of the rounds."""
    s: dict = {}
    for peer, rounds in results.items():
        ok = [r for r in rounds if r]
        if not ok:
            continue
        if how == "best":
            sm = max((r["small"] for r in ok), key=lambda x: x["req_s"])
            lg = max((r["large"] for r in ok), key=lambda x: x["transfer_Bps"])
            small, large = [sm], [lg]
        else:
            small, large = [r["small"] for r in ok], [r["large"] for r in ok]
        s[peer] = {
            "small_req_s": _mean([x["req_s"] for x in small]),
            "small_p50_ms": _mean([x.get("p50_ms") for x in small]),
            "small_p99_ms": _mean([x.get("p99_ms") for x in small]),
            "small_cpu_pct": _mean([x["proxy_cpu_pct"] for x in small]),
            "large_MiB_s": _mean([x["transfer_Bps"] / 2**20 for x in large]),
            "large_p99_ms": _mean([x.get("p99_ms") for x in large]),
            "large_cpu_pct": _mean([x["proxy_cpu_pct"] for x in large]),
            "errors": sum(r["small"]["errors"] + r["large"]["errors"] for r in ok),
            "rounds": len(ok),
            "small_req_s_spread": (max(r["small"]["req_s"] for r in ok)
                                   / min(r["small"]["req_s"] for r in ok) - 1),
        }
        if peer in rss:
            s[peer]["idle_rss_MB"] = rss[peer]["rss_kib"] * 1024 / 1e6
            s[peer]["idle_rss_before_MB"] = rss[peer]["rss_before_kib"] * 1024 / 1e6
            s[peer]["idle_alive"] = rss[peer]["alive"]
            s[peer]["idle_per_conn_KiB"] = rss[peer]["per_conn_bytes"] / 1024
            if fl := rss[peer].get("inflight"):
                held = max(1, rss[peer]["opened"])
                s[peer]["inflight_p99_ms"] = fl["p99_ms"]
                s[peer]["inflight_max_ms"] = fl["max_ms"]
                s[peer]["inflight_errors"] = fl["errors"]
                s[peer]["inflight_rss_MB"] = fl["rss_peak_kib"] * 1024 / 1e6
                s[peer]["inflight_per_conn_KiB"] = (
                    fl["rss_peak_kib"] - rss[peer]["rss_before_kib"]) / held
    return s


ROWS = [
    # key, label, format, must-reach: (kind, factor) vs nginx or absolute
    ("small_req_s", "small: req/s", "{:,.0f}", ("ge_nginx", 0.7)),
    ("small_p50_ms", "small: p50 (ms)", "{:.2f}", None),
    ("small_p99_ms", "small: p99 (ms)", "{:.2f}", ("le_nginx", 2.0)),
    ("small_cpu_pct", "small: proxy CPU (% of a core)", "{:.0f}", None),
    ("large_MiB_s", "1 MiB: MiB/s", "{:,.0f}", ("ge_nginx", 0.5)),
    ("large_p99_ms", "1 MiB: p99 (ms)", "{:.1f}", None),
    ("large_cpu_pct", "1 MiB: proxy CPU (% of a core)", "{:.0f}", None),
    ("idle_rss_MB", "RSS with {idle} idle keep-alive conns (MB)", "{:.1f}", ("le_abs", 150.0)),
    ("idle_rss_before_MB", "RSS before opening them (MB)", "{:.1f}", None),
    ("idle_per_conn_KiB", "RSS per idle conn (KiB)", "{:.1f}", None),
    ("idle_alive", "idle conns still open at the end", "{:,.0f}", None),
    ("inflight_p99_ms", "{idle} conns, a request in flight on each: p99 (ms)", "{:,.1f}",
     None),
    ("inflight_max_ms", "  in flight: max (ms)", "{:,.1f}", None),
    ("inflight_errors", "  in flight: errors (all rounds)", "{:,.0f}", None),
    ("inflight_rss_MB", "  in flight: peak RSS (MB)", "{:.1f}", None),
    ("inflight_per_conn_KiB", "  in flight: RSS per conn (KiB)", "{:.1f}", None),
    ("errors", "errors (socket + non-2xx, all runs)", "{:,.0f}", None),
]


def _ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def table(s: dict, peers: list[str], idle: int, check: bool = True) -> str:
    """check: add issue 2's "must reach" column (its figures are for 1 worker)."""
    cols = [p for p in peers if p in s]
    hd = "haproxyd" in s
    head = ["metric", *cols]
    if hd and "nginx" in s:
        head.append("haproxyd/nginx")
    if hd and "haproxy" in s:
        head.append("haproxyd/haproxy")
    if hd and check:
        head.append("must reach (issue 2)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, fmt, must in ROWS:
        vals = [s[p].get(key) for p in cols]
        if all(v is None for v in vals):
            continue
        row = [label.format(idle=f"{idle:,}")]
        row += ["-" if v is None else fmt.format(v) for v in vals]
        a = s.get("haproxyd", {}).get(key)
        if hd and "nginx" in s:
            row.append(_ratio(a, s["nginx"].get(key)))
        if hd and "haproxy" in s:
            row.append(_ratio(a, s["haproxy"].get(key)))
        if hd and check:
            if key == "idle_rss_MB" and idle < 10000:
                row.append("(needs 10,000 conns)")
            else:
                row.append(_must(must, a, s.get("nginx", {}).get(key)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _must(must, a, n) -> str:
    if must is None:
        return ""
    kind, f = must
    if kind == "le_abs":
        return f"≤ {f:.0f} MB: " + ("-" if a is None else ("PASS" if a <= f else "FAIL"))
    word = "≥" if kind == "ge_nginx" else "≤"
    text = f"{word} {f:g}x nginx"
    if a is None or n is None:
        return text + ": -"
    ok = a >= f * n if kind == "ge_nginx" else a <= f * n
    return text + (": PASS" if ok else ": FAIL")


def rounds_table(results: dict, direct: dict | None) -> str:
    lines = ["| round | proxy | small req/s | p50 ms | p99 ms | proxy CPU % | 1 MiB MiB/s "
             "| 1 MiB p99 ms | errors | other CPU % proxy/load core |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(-1, 0, "(backend direct)", direct)] if direct else []
    for peer, rounds in results.items():
        rows += [(r["order"], i, peer, r) for i, r in enumerate(rounds) if r]
    for _, i, peer, r in sorted(rows):
        sm, lg = r["small"], r["large"]
        cpu = "-" if peer.startswith("(") else f"{sm['proxy_cpu_pct']:.0f}"
        op, ol = _other(r)
        other = ("-" if peer.startswith("(") else f"{op:.0f}") + f"/{ol:.0f}"
        lines.append(
            f"| {i + 1} | {peer} | {sm['req_s']:,.0f} | {sm['p50_ms']:.2f} | {sm['p99_ms']:.2f} | "
            f"{cpu} | {lg['transfer_Bps'] / 2**20:,.0f} | {lg['p99_ms']:.1f} | "
            f"{sm['errors'] + lg['errors']} | {other}"
            f"{' !' if max(op, ol) > OTHER_CPU_WARN else ''} |"
        )
    return "\n".join(lines)


def _other(r: dict) -> tuple[float, float]:
    """Worst other-load % of a run's two measurements: (proxy core, load core)."""
    sm, lg = r["small"], r["large"]
    return (max(sm["other_cpu_pct"], lg["other_cpu_pct"]),
            max(sm["other_load_core_pct"], lg["other_load_core_pct"]))


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1,
                    help="workers per proxy (haproxyd workers / nginx worker_processes / "
                         "haproxy nbthread); >1 pins everything to all cores")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (1-120)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating order (1-5)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections")
    ap.add_argument("--wrk-threads", type=int, default=None,
                    help="wrk threads (default 1, or 2 with --workers > 1)")
    ap.add_argument("--idle-conns", type=int, default=10000,
                    help="idle keep-alive connections for the RSS row (0 skips it)")
    ap.add_argument("--inflight-rounds", type=int, default=3,
                    help="after the idle RSS, rounds of one request in flight on every one of "
                         "those connections at once (0 skips; at most 20)")
    ap.add_argument("--only", default=",".join(PEERS),
                    help="comma list of proxies to run (haproxyd,nginx,haproxy)")
    ap.add_argument("--no-direct", action="store_true",
                    help="skip the reference run of wrk straight at the backend")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the backend, proxies and wrk at this nice level (e.g. -10 as "
                         "root, to keep other load on a shared machine from disturbing them)")
    ap.add_argument("--wait-quiet", type=int, default=0, metavar="S",
                    help="before each measurement, wait up to S seconds for the machine to be "
                         "idle (<10%% CPU busy over 2 s); for shared machines")
    ap.add_argument("--aggregate", choices=("best", "mean"), default="best",
                    help="summary per proxy: its best round (default; robust to other load on "
                         "the machine) or the mean of the rounds")
    ap.add_argument("--json", metavar="FILE", help="write every number to FILE")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--serve", metavar="PROXY", choices=PEERS,
                    help="measure nothing: start the backend and this proxy, print its URL "
                         "(for bench/locustfile.py) and hold until Ctrl-C or --serve-seconds")
    ap.add_argument("--serve-seconds", type=int, default=900, help="upper bound for --serve")
    ap.add_argument("--unpinned", action="store_true",
                    help="no taskset: every process may run on every core")
    ap.add_argument("--h2", action="store_true",
                    help="add the HTTP/2 rows: h2load against each proxy over TLS (ALPN h2) "
                         "and cleartext prior knowledge (h2c); needs h2load (nghttp2-client)")
    ap.add_argument("--h2-only", action="store_true",
                    help="only the HTTP/2 rows (no wrk rows, no idle-connection rows)")
    ap.add_argument("--h2-modes", default=",".join(h2bench.MODES),
                    help="comma list of HTTP/2 modes for --h2 (h2,h2c)")
    ap.add_argument("--h2-clients", type=int, default=50, help="h2load connections (-c)")
    ap.add_argument("--h2-streams", type=int, default=10,
                    help="h2load concurrent streams per connection (-m)")
    ap.add_argument("--scaling", action="store_true",
                    help="two runs, 1 then 2 workers each, both unpinned with 2 wrk threads and "
                         "no idle-connection rows; prints each proxy's scaling (2 ÷ 1)")
    o = ap.parse_args(argv)
    o.only = [p.strip() for p in o.only.split(",") if p.strip()]
    o.h2 = o.h2 or o.h2_only
    o.h2_modes = [m.strip() for m in o.h2_modes.split(",") if m.strip()]
    if bad := [m for m in o.h2_modes if m not in h2bench.MODES]:
        ap.error(f"unknown --h2-modes {bad}; choose from {','.join(h2bench.MODES)}")
    o.h2_clients = max(1, min(o.h2_clients, 2000))
    o.h2_streams = max(1, min(o.h2_streams, 1000))
    if o.h2_only:
        o.idle_conns = 0
    if o.serve:
        o.only = [o.serve]
    o.serve_seconds = max(1, min(o.serve_seconds, 3600))
    bad = [p for p in o.only if p not in PEERS]
    if bad:
        ap.error(f"unknown proxy {bad}; choose from {','.join(PEERS)}")
    if not 1 <= o.duration <= 120:
        ap.error("--duration must be 1..120 s")
    if not 1 <= o.rounds <= 5:
        ap.error("--rounds must be 1..5")
    if not 1 <= o.workers <= 64:
        ap.error("--workers must be 1..64")
    o.warmup = max(0, min(o.warmup, 30))
    o.connections = max(1, min(o.connections, 2000))
    if o.wrk_threads is None:
        o.wrk_threads = 1 if o.workers == 1 else min(2, os.cpu_count() or 1)
    return o


def pinning(workers: int, unpinned: bool = False
            ) -> tuple[set[int] | None, set[int] | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if unpinned:
        return None, None, (f"unpinned ({workers} worker(s) each): proxy, backend and wrk on "
                            f"any of the {len(cpus)} cores, as the scheduler places them")
    if workers == 1 and len(cpus) >= 2:
        a, b = {cpus[0]}, {cpus[1]}
        return a, b, (f"proxy on core {cpus[0]}; backend nginx, wrk and the idle-connection "
                      f"helper on core {cpus[1]} (taskset -c)")
    if len(cpus) >= 2:
        allc = set(cpus)
        return allc, allc, (f"{workers} workers: proxy, backend and wrk all on cores "
                            f"{','.join(map(str, cpus))} — the load generator and the backend "
                            f"share the proxy's cores, so absolute numbers are understated")
    return None, None, "one core only: no pinning, everything shares it"


def scaling_table(one: dict, two: dict) -> str:
    """Per proxy: small req/s with 1 and 2 workers, the scaling (2 ÷ 1), and haproxyd's
    ratio to each peer with 2 workers (summaries of two unpinned compare.py runs)."""
    peers = [p for p in PEERS if p in one and p in two]
    lines = ["| proxy | req/s, 1 worker | req/s, 2 workers | scaling (2 ÷ 1) "
             "| p99 ms, 2 workers | haproxyd/this, 1 worker | haproxyd/this, 2 workers |",
             "|---|---|---|---|---|---|---|"]
    for p in peers:
        a, b = one[p]["small_req_s"], two[p]["small_req_s"]
        ratios = ["-" if p == "haproxyd" else _ratio(run.get("haproxyd", {}).get("small_req_s"),
                                                     run[p]["small_req_s"])
                  for run in (one, two)]
        lines.append(f"| {p} | {a:,.0f} | {b:,.0f} | {_ratio(b, a)} | "
                     f"{two[p]['small_p99_ms']:.2f} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def scaling(argv: list[str]) -> int:
    """compare.py twice (1 then 2 workers, unpinned), then the scaling table."""
    base = [a for a in argv if a != "--scaling"]
    summaries, rc = {}, 0
    for w in (1, 2):
        fd, path = tempfile.mkstemp(prefix="haproxyd-scaling-", suffix=".json")
        os.close(fd)
        try:
            print(f"\n# scaling: {w} worker(s) each\n", flush=True)
            rc |= main([*base, "--workers", str(w), "--unpinned", "--wrk-threads", "2",
                        "--idle-conns", "0", "--json", path])
            with contextlib.suppress(ValueError, OSError):
                summaries[w] = json.loads(Path(path).read_text())["summary"]
        finally:
            Path(path).unlink(missing_ok=True)
        if w not in summaries:
            return rc or 1
    print("\n## Scaling, 1 -> 2 workers (unpinned, same machine; ratios only)\n")
    print(scaling_table(summaries[1], summaries[2]))
    return rc


def main(argv=None) -> int:
    o = parse_args(argv)
    if o.scaling:
        return scaling(list(sys.argv[1:] if argv is None else argv))
    o.nofile = raise_nofile()
    _common.NICE = o.nice
    if o.idle_conns > o.nofile - 200:
        new = max(0, o.nofile - 200)
        print(f"note: RLIMIT_NOFILE hard limit is {o.nofile}; idle connections {o.idle_conns}"
              f" -> {new}", file=sys.stderr)
        o.idle_conns = new
    for tool in ("nginx", "wrk", *(("h2load",) if o.h2 else ())):
        if which(tool) is None:
            if tool == "h2load":
                print("error: --h2 needs h2load: apt-get install nghttp2-client", file=sys.stderr)
                return 2
            print(f"error: {tool} is required (backend / load): apt-get install {tool}",
                  file=sys.stderr)
            return 2
    peers = []
    for p in o.only:
        why = installed(p)
        if why:
            print(f"skipping {p}: {why}")
        else:
            peers.append(p)
    if not peers:
        print("error: no proxy to measure", file=sys.stderr)
        return 2

    proxy_cpus, load_cpus, pin_text = pinning(o.workers, o.unpinned)
    if load_cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, load_cpus)  # this harness stays off the proxy's core

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (nohup, &)
    signal.signal(signal.SIGHUP, on_term)

    tmp = Path(tempfile.mkdtemp(prefix="haproxyd-bench-"))
    procs = Procs()
    results: dict[str, list] = {p: [None] * o.rounds for p in peers}
    rss: dict[str, dict] = {}
    failures: dict[str, str] = {}
    idle_failures: dict[str, str] = {}
    direct = None
    h2 = None
    versions = {p: version(p) for p in [*peers, "wrk", *(("h2load",) if o.h2 else ())]}
    if "nginx" not in versions:
        versions["nginx (backend)"] = version("nginx")
    wrk_rounds = 0 if o.h2_only else o.rounds
    est = wrk_rounds * len(peers) * (o.warmup + 2 * o.duration + 3) + (
        0 if o.no_direct or o.h2_only else 2 * o.duration) + (
        len(peers) * 15 if o.idle_conns else 0) + (
        o.rounds * len(peers) * len(o.h2_modes) * (o.warmup + o.duration + 4) if o.h2 else 0)
    print(f"# haproxyd benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"{platform.node()}, {os.cpu_count()} cores")
    print(f"peers: {', '.join(f'{p} ({versions[p]})' for p in peers)}; wrk: {versions['wrk']}")
    print(f"pinning: {pin_text}" + (f"; nice {o.nice}" if o.nice else ""))
    if not o.serve:
        if not o.h2_only:
            print(f"load: wrk -t{o.wrk_threads} -c{o.connections} -d{o.duration}s --latency, "
                  f"{o.rounds} round(s) alternating order, {o.warmup}s warm-up per proxy and "
                  f"round", flush=True)
        print(f"about {est // 60}m{est % 60:02d}s", flush=True)
        if o.h2:
            print(f"HTTP/2: h2load -c{o.h2_clients} -m{o.h2_streams} -t1 -D{o.duration} "
                  f"({versions['h2load']}), modes {','.join(o.h2_modes)}", flush=True)
        print(flush=True)
    try:
        lua = tmp / "report.lua"
        lua.write_text(WRK_LUA)
        bport = free_port()
        bconf = backend_conf(tmp, bport, o.workers, o.nofile)
        backend = procs.start("backend", [which("nginx"), "-p", str(tmp), "-e",
                                          str(tmp / "backend-error.log"), "-c", str(bconf)],
                              str(tmp / "backend.log"), cpus=load_cpus)
        wait_http(bport, backend, timeout=15)
        print(f"backend: nginx on {LOOPBACK}:{bport} (pid {backend.popen.pid})", flush=True)
        if o.serve:
            p, port = start_peer(procs, o.serve, tmp, bport, o, proxy_cpus)
            print(f"{o.serve} (pid {p.popen.pid}) proxying to it: http://{LOOPBACK}:{port}/  "
                  f"(1 MiB body at {LARGE_PATH}); Ctrl-C stops both "
                  f"(or after {o.serve_seconds}s)", flush=True)
            deadline = time.monotonic() + o.serve_seconds
            while time.monotonic() < deadline and p.popen.poll() is None:
                time.sleep(0.5)
            if p.popen.poll() is not None:
                print(f"{o.serve} exited:\n{log_tail(p.log_path)}", file=sys.stderr)
                return 1
            return 0
        if not o.no_direct and not o.h2_only:
            direct = measure_load(backend, bport, o, load_cpus, str(lua), backend, load_cpus)
            print(f"  direct to backend: {direct['small']['req_s']:,.0f} req/s, "
                  f"{direct['large']['transfer_Bps'] / 2**20:,.0f} MiB/s", flush=True)
        n = 0
        for rnd in range(wrk_rounds):
            order = peers if rnd % 2 == 0 else list(reversed(peers))
            for peer in order:
                if peer in failures:
                    continue
                p = None
                try:
                    p, port = start_peer(procs, peer, tmp, bport, o, proxy_cpus)
                    r = measure_load(p, port, o, load_cpus, str(lua), backend, proxy_cpus)
                    r["order"] = n
                    n += 1
                    results[peer][rnd] = r
                    print(f"round {rnd + 1} {peer:9s} small {r['small']['req_s']:9,.0f} req/s "
                          f"p50 {r['small']['p50_ms']:6.2f} ms p99 {r['small']['p99_ms']:6.2f} ms"
                          f" cpu {r['small']['proxy_cpu_pct']:3.0f}% | 1 MiB "
                          f"{r['large']['transfer_Bps'] / 2**20:7,.0f} MiB/s | errors "
                          f"{r['small']['errors'] + r['large']['errors']}", flush=True)
                    if rnd == o.rounds - 1 and o.idle_conns:
                        try:
                            rss[peer] = m = measure_idle(procs, p, port, o, tmp, load_cpus)
                        except (RuntimeError, ValueError, OSError) as e:
                            idle_failures[peer] = str(e)
                            print(f"        {peer:9s} idle test FAILED: {e}", flush=True)
                        else:
                            print(f"        {peer:9s} idle: {m['opened']:,} conns open "
                                  f"({m['alive']:,} alive at the end), RSS "
                                  f"{m['rss_before_kib'] / 1024:.1f} -> "
                                  f"{m['rss_kib'] / 1024:.1f} MiB", flush=True)
                            if fl := m.get("inflight"):
                                print(f"        {peer:9s} in flight: {fl['rounds']} x "
                                      f"{m['opened']:,}: {fl['ok']:,} ok, {fl['errors']:,} "
                                      f"errors, p99 {fl['p99_ms']:,.1f} ms, max "
                                      f"{fl['max_ms']:,.1f} ms, peak RSS "
                                      f"{fl['rss_peak_kib'] / 1024:.1f} MiB, "
                                      f"{fl['alive_after']:,} open after", flush=True)
                                if fl["errors"]:
                                    idle_failures[peer] = (
                                        f"{fl['errors']:,} errors with a request in flight on "
                                        f"every connection")
                            if m["ok"] < o.idle_conns or m["alive"] < m["ok"]:
                                idle_failures[peer] = (
                                    f"{m['ok']:,} of {o.idle_conns:,} idle connections answered, "
                                    f"{m['alive']:,} still open when the RSS was read")
                except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as e:
                    failures[peer] = str(e)
                    print(f"round {rnd + 1} {peer}: FAILED: {e}", flush=True)
                finally:
                    if p is not None:
                        procs.stop(p)
        if o.h2:
            o.h2_tls = make_cert(tmp) if "h2" in o.h2_modes else None
            h2 = h2bench.run_rows(
                [p for p in peers if p not in failures], o,
                lambda peer, mode: start_h2_peer(procs, peer, mode, tmp, bport, o, proxy_cpus),
                procs.stop, load_cpus, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        procs.stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        if o.keep_tmp:
            print(f"temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    s = summarize(results, rss, o.aggregate)
    what = "best of" if o.aggregate == "best" else "mean of"
    if not o.h2_only:
        print(f"\n## Summary ({what} {o.rounds} round(s) per proxy; RSS from the last round)\n")
        print(table(s, peers, o.idle_conns, check=o.workers == 1 and not o.unpinned))
        print("\n## Per round\n")
        print(rounds_table(results, direct))
    if h2 is not None:
        print(f"\n## HTTP/2 (best of {o.rounds} round(s) per proxy and mode)\n")
        print(h2bench.table(h2, peers, f"-c{o.h2_clients} -m{o.h2_streams} -t1 -D{o.duration}, "
                                       f"backend HTTP/1.1 keep-alive"))
    notes = [f"pinning: {pin_text}."]
    if direct and o.workers == 1:
        ceiling = direct["small"]["req_s"]
        notes.append(f"backend direct (no proxy): {ceiling:,.0f} req/s, the ceiling of the load "
                     f"core (wrk and the backend are on it in every run).")
        for peer in ("nginx", "haproxy"):
            if peer in s:
                frac = s[peer]["small_req_s"] / ceiling
                capped = s[peer]["small_cpu_pct"] < 90
                notes.append(f"{peer} reached {frac:.0%} of that ceiling with its core "
                             f"{s[peer]['small_cpu_pct']:.0f}% busy"
                             + ("; it was not the bottleneck (the load core or other load on the "
                                "machine was), so its real capacity is higher than shown and a "
                                "ratio against it flatters haproxyd."
                                if capped else "."))
    runs = [r for rounds in results.values() for r in rounds if r] + ([direct] if direct else [])
    worst = max((max(_other(r)) for r in runs), default=0)
    if worst > OTHER_CPU_WARN:
        notes.append(f"other processes on this machine used up to {worst:.0f}% of a core during "
                     f"some runs (marked ! in the per-round table; a lower bound): those "
                     f"numbers are disturbed; rerun when the machine is quiet.")
    for peer, v in s.items():
        if v["rounds"] > 1 and v["small_req_s_spread"] > 0.15:
            notes.append(f"{peer}: its rounds differ by {v['small_req_s_spread']:.0%} in req/s.")
    for peer, why in idle_failures.items():
        notes.append(f"{peer} idle-connection test: {why.splitlines()[0] if why else '?'}")
    for peer, why in failures.items():
        lines = [x.strip() for x in why.splitlines() if x.strip()] or ["?"]
        tail = f" ... {lines[-1]}" if len(lines) > 1 else ""
        notes.append(f"{peer} FAILED: {lines[0]}{tail}")
    print("\n" + "\n".join(f"- {x}" for x in notes))
    if o.json:
        for rounds in results.values():
            for r in rounds:
                if r:
                    for k in ("small", "large"):
                        r[k].pop("raw", None)
        if direct:
            for k in ("small", "large"):
                direct[k].pop("raw", None)
        Path(o.json).write_text(json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
            "cpus": os.cpu_count(), "args": {k: v for k, v in vars(o).items()},
            "pinning": pin_text, "versions": versions, "summary": s, "rounds": results,
            "idle": rss, "direct": direct, "failures": failures,
            "idle_failures": idle_failures, "notes": notes, "h2": h2,
        }, indent=2))
        print(f"\nwrote {o.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
