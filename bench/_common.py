"""Shared plumbing for bench/compare.py: processes, /proc readings, wrk, idle holder.

Stdlib only. Run as ``python bench/_common.py hold-idle PORT COUNT`` it becomes the
helper process that keeps COUNT idle keep-alive connections open to 127.0.0.1:PORT.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- limits


def raise_nofile() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.access(p, os.X_OK)),
        None,
    )


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces/parens: fields start after the last ')'
    return data[data.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[19]) if f else None  # field 22 of stat, 0-based 19 after comm


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of pid (children first, breadth-first)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f:
            children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(0), []):
            out.append(c)
            todo.append(c)
    return out


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> tuple[int, int]:
    """(sum of VmRSS over pid and its descendants, number of processes)."""
    pids = [pid, *descendants(pid)]
    return sum(rss_kib(p) for p in pids), len(pids)


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its live descendants, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *descendants(pid)]:
        f = _stat_fields(p)
        if f:
            total += int(f[11]) + int(f[12])
    return total / tick


def core_ticks() -> dict[int, list[int]]:
    """Per-core CPU ticks from /proc/stat: user nice system idle iowait irq softirq steal."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                out[int(parts[0][3:])] = [int(x) for x in parts[1:9]]
    return out


def busy_seconds(before: dict, after: dict, cores: set[int] | None) -> float:
    """user+nice+system+steal seconds spent on cores between two core_ticks().

    Interrupt and softirq time are left out: part of it is our own network traffic.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for c in cores if cores else after.keys():
        d = [y - x for x, y in zip(before.get(c, after[c]), after[c], strict=True)]
        total += d[0] + d[1] + d[2] + d[7]
    return total / tick


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_seconds() -> float:
    """CPU of this process's waited-for children (the wrk runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_s: float, busy_pct: float = 10.0, window: float = 2.0) -> float:
    """Wait (at most max_s) for a window in which the machine's CPUs are < busy_pct busy.

    Returns the busy % of the last window (so the caller can say it did not get quiet).
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)

    deadline = time.monotonic() + max_s
    busy = 100.0
    while True:
        a = sample()
        time.sleep(window)
        b = sample()
        busy = 100.0 * (b[0] - a[0]) / max(1, b[1] - a[1])
        if busy < busy_pct or time.monotonic() + window > deadline:
            return busy


# --------------------------------------------------------------------------- processes


NICE = 0  # set by compare.py --nice; applied to every process started here


def _preexec(cpus: set[int] | None):
    def fn() -> None:
        raise_nofile()
        if NICE:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, NICE)
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    return fn


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: str
    start: int | None = None
    kids: dict[int, int | None] = field(default_factory=dict)


class Procs:
    """Every process the harness starts; stop_all() stops each one by PID."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: list[str],
        log_path: str,
        cpus: set[int] | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> Proc:
        if cpus and which("taskset"):
            argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            popen = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                cwd=cwd,
                env=env,
                preexec_fn=_preexec(cpus),
                start_new_session=True,  # Ctrl-C reaches us; we stop them in order
            )
        finally:
            log.close()
        p = Proc(name, popen, log_path, start_time(popen.pid))
        self.procs.append(p)
        return p

    def stop(self, p: Proc, grace: float = 5.0) -> None:
        if p not in self.procs:
            return
        self.procs.remove(p)
        pid = p.popen.pid
        # remember descendants (nginx workers, haproxyd workers) with their start times
        for k in descendants(pid):
            p.kids[k] = start_time(k)
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                p.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(grace)
        deadline = time.monotonic() + grace
        for kid, st in p.kids.items():
            while start_time(kid) == st and st is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if st is not None and start_time(kid) == st:  # same process, still there
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)
        for stream in (p.popen.stdin, p.popen.stdout):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping {p.name} (pid {p.popen.pid}): {e}", file=sys.stderr)


# --------------------------------------------------------------------------- HTTP checks


def _client_tls() -> ssl.SSLContext:
    """A client context for the bench's self-signed listeners (loopback only: no checks)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_get(
    port: int, path: str = "/", timeout: float = 2.0, tls: bool = False
) -> tuple[int, bytes]:
    """One GET over a fresh connection; (status, body). Raises OSError on failure."""
    import http.client

    conn = (
        http.client.HTTPSConnection(LOOPBACK, port, timeout=timeout, context=_client_tls())
        if tls
        else http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    )
    try:
        conn.request("GET", path, headers={"Host": f"{LOOPBACK}:{port}"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_http(port: int, proc: Proc | None, timeout: float = 20.0, tls: bool = False) -> None:
    """Wait until GET / on port answers 200; raise RuntimeError with the log tail if not."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}:\n{log_tail(proc.log_path)}"
            )
        try:
            status, _ = http_get(port, "/", timeout=1.0, tls=tls)
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, Exception) as e:  # http.client raises several kinds
            last = repr(e)
        time.sleep(0.1)
    tail = log_tail(proc.log_path) if proc else ""
    raise RuntimeError(f"no 200 on 127.0.0.1:{port} within {timeout:.0f}s ({last})\n{tail}")


def wait_listening(port: int, proc: Proc | None, timeout: float = 20.0) -> None:
    """Wait until 127.0.0.1:port accepts a connection (for listeners that speak no
    HTTP/1.1, such as h2c with prior knowledge); RuntimeError with the log tail if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}:\n{log_tail(proc.log_path)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 1.0):
            return
        time.sleep(0.1)
    tail = log_tail(proc.log_path) if proc else ""
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} within {timeout:.0f}s\n{tail}")


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- connections


def parse_ss_ports(text: str, port: int) -> int:
    """Sockets in `ss -Htan` output whose local or peer address is 127.0.0.1:port."""
    want = f"{LOOPBACK}:{port}"
    n = 0
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 4 and want in (cols[-2], cols[-1]):
            n += 1
    return n


def time_wait_count(port: int) -> int | None:
    """TCP sockets in TIME-WAIT to or from 127.0.0.1:port (None without `ss`).

    Every TCP connection closed leaves one side in TIME-WAIT for 60 s (the side that
    closed first), so the difference across a run of a few seconds counts the
    connections closed on that port during it: the backend's upstream churn. Only while
    the ports do not wrap (hundreds a second, not thousands: see passive_opens).
    """
    if which("ss") is None:
        return None
    cp = subprocess.run(
        ["ss", "-Htan", "state", "time-wait", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True, text=True, timeout=30,
    )
    if cp.returncode != 0:
        return None
    return parse_ss_ports(cp.stdout, port)


def parse_passive_opens(snmp: str) -> int:
    """Tcp PassiveOpens from the text of /proc/net/snmp (header line, then values)."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    head, values = rows[0], rows[1]
    return int(values[head.index("PassiveOpens")])


def passive_opens() -> int:
    """Connections accepted by any listener of this network namespace since boot.

    Machine-wide (other sessions' connections count too: a few dozen a second on a busy
    shared machine), but unlike TIME-WAIT sockets it misses none: at thousands of new
    connections a second the ephemeral ports wrap and a new connection takes over an old
    one's TIME-WAIT, so those counts fall short.
    """
    with open("/proc/net/snmp") as f:
        return parse_passive_opens(f.read())


# Preloaded into wrk (which links libssl dynamically): counts its completed client
# handshakes, resumed or full, and writes them at exit: the check that the load itself
# resumed, with any of the three proxies (none needs a log or a statistic for it).
TLS_COUNTER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
typedef struct ssl_st SSL;
static unsigned long full_hs, resumed_hs;
int SSL_connect(SSL *s) {
    static int (*real)(SSL *);
    static int (*reused)(const SSL *);
    if (!real) {
        real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
        reused = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_session_reused");
    }
    int r = real(s);
    if (r == 1)
        __atomic_add_fetch(reused(s) ? &resumed_hs : &full_hs, 1, __ATOMIC_RELAXED);
    return r;
}
__attribute__((destructor)) static void bench_tls_report(void) {
    const char *path = getenv("BENCH_TLS_COUNT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "%lu %lu\n", full_hs, resumed_hs);
        fclose(f);
    }
}
"""


def build_tls_counter(tmp: Path) -> str | None:
    """Compile TLS_COUNTER_C into tmp; its path, or None without a C compiler."""
    cc = which("cc") or which("gcc")
    if cc is None:
        return None
    src, lib = tmp / "tls_counter.c", tmp / "tls_counter.so"
    src.write_text(TLS_COUNTER_C)
    cp = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"],
                        capture_output=True, text=True, timeout=60)
    return str(lib) if cp.returncode == 0 and lib.exists() else None


def parse_tls_count(text: str) -> tuple[int, int] | None:
    """(full, resumed) handshakes from the counter's file, None if it wrote nothing."""
    parts = text.split()
    if len(parts) != 2 or not all(x.isdigit() for x in parts):
        return None
    return int(parts[0]), int(parts[1])


def tls_resume_probe(port: int, count: int = 20, max_tls12: bool = False) -> dict:
    """Open `count` TLS connections in turn, each offering the previous one's session.

    One GET per connection (`Connection: close`), the response read whole, so a TLS 1.3
    ticket has arrived before the session is taken. Returns connections, resumed (of the
    count - 1 that offered a session), the protocol and any error: the check that a
    listener resumes sessions at all, for the load runs whose client cannot tell.
    """
    ctx = _client_tls()
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    req = f"GET / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n".encode()
    session = None
    out: dict = {"connections": 0, "resumed": 0, "protocol": "", "error": ""}
    for _ in range(max(2, min(count, 200))):
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as raw, ctx.wrap_socket(
                raw, session=session
            ) as s:
                out["protocol"] = s.version() or ""
                s.sendall(req)
                while s.recv(65536):
                    pass
                out["connections"] += 1
                out["resumed"] += bool(s.session_reused)
                session = s.session
        except (OSError, ssl.SSLError) as e:
            out["error"] = repr(e)
            break
    return out


# --------------------------------------------------------------------------- wrk

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""

_UNITS_T = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNITS_B = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _dur(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS_T[m.group(2)]


def parse_wrk(out: str) -> dict:
    """Parse wrk's text output (with --latency); plus the exact numbers of WRK_LUA.

    Returns req_s, transfer_Bps, p50_ms, p90_ms, p99_ms, requests, errors, non2xx.
    """
    r: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise ValueError("no Requests/sec in wrk output:\n" + out[-2000:])
    r["req_s"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", out)
    r["transfer_Bps"] = float(m.group(1)) * _UNITS_B[m.group(2)] if m else 0.0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+(?:us|ms|s|m|h))\s*$", out, re.M)
        if m:
            r[f"p{pct}_ms"] = _dur(m.group(1)) * 1e3
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"^BENCHJSON (\{.*\})\s*$", out, re.M)
    if m:  # exact figures from the Lua done() hook win over the rounded text
        j = json.loads(m.group(1))
        secs = j["duration_us"] / 1e6
        r["requests"] = j["requests"]
        r["req_s"] = j["requests"] / secs
        r["transfer_Bps"] = j["bytes"] / secs
        for k in ("p50", "p90", "p99", "p999"):
            r[f"{k}_ms"] = j[f"{k}_us"] / 1e3
        r["max_ms"] = j["max_us"] / 1e3
        r["socket_errors"] = j["connect"] + j["read"] + j["write"] + j["timeout"]
        r["non2xx"] = j["status"]
    r["errors"] = r["socket_errors"] + r["non2xx"]
    return r


def run_wrk(
    url: str,
    duration: int,
    connections: int,
    threads: int,
    cpus: set[int] | None,
    lua_path: str | None,
    timeout_s: int = 5,
    headers: tuple[str, ...] = (),
    tls_counter: str | None = None,
) -> tuple[dict, str]:
    """One wrk run; with tls_counter (build_tls_counter's library) the result also has
    tls_full and tls_resumed, the client handshakes of the run."""
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s",
        "--latency",
    ]
    for h in headers:
        argv += ["-H", h]
    if lua_path:
        argv += ["-s", lua_path]
    argv.append(url)
    if cpus and which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
    env = None
    count_file = None
    if tls_counter:
        count_file = Path(tls_counter).with_suffix(".count")
        count_file.unlink(missing_ok=True)
        env = {**os.environ, "LD_PRELOAD": tls_counter, "BENCH_TLS_COUNT": str(count_file)}
    cp = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, preexec_fn=_preexec(None),
        env=env,
    )
    if cp.returncode != 0:
        raise RuntimeError(f"wrk failed ({cp.returncode}): {cp.stderr.strip()}")
    res = parse_wrk(cp.stdout)
    if count_file is not None and count_file.exists():
        got = parse_tls_count(count_file.read_text())
        if got:
            res["tls_full"], res["tls_resumed"] = got
    return res, cp.stdout


# --------------------------------------------------------------------------- idle holder


def _read_response(buf: bytes) -> tuple[int, bool]:
    """(status, complete) for a buffered HTTP/1.1 response to a GET."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0, False
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return -1, True
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    body = buf[end + 4 :]
    if "content-length" in hdrs:
        return status, len(body) >= int(hdrs["content-length"])
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        return status, body.endswith(b"0\r\n\r\n")
    return status, status in (204, 304)


def _read_step(
    sel: selectors.BaseSelector, bufs: dict[socket.socket, bytes], s: socket.socket
) -> int | None:
    """Read what s has into bufs[s]. None while its response is incomplete; else s is
    unregistered and dropped from bufs, and the status is returned (0: failed or EOF)."""
    try:
        chunk = s.recv(65536)
    except OSError:
        chunk = b""
    status = 0
    if chunk:
        bufs[s] += chunk
        status, done = _read_response(bufs[s])
        if not done:
            return None
    sel.unregister(s)
    bufs.pop(s)
    return status


def percentile(sorted_xs: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_xs:
        return 0.0
    k = max(0, min(len(sorted_xs) - 1, -(-len(sorted_xs) * pct // 100) - 1))
    return sorted_xs[int(k)]


def burst(socks: list[socket.socket], req: bytes, rounds: int, round_max: float = 30.0) -> dict:
    """rounds x (one GET written on every socket, then every response read).

    All requests of a round are in flight at once: the proxy holds len(socks) requests
    and their backend exchanges together, not idle connections. Latency is from the
    write of a request to the end of its response, so it includes this process's own
    time to write the others (measured too: write_ms). A socket whose response fails,
    or is not whole within round_max seconds, is an error and is dropped.
    """
    rounds = max(1, min(rounds, 20))
    lat: list[float] = []
    errors = 0
    write_ms = 0.0
    t_start = time.monotonic()
    live = list(socks)
    dead: set[socket.socket] = set()
    for _ in range(rounds):
        sel = selectors.DefaultSelector()
        sent: dict[socket.socket, float] = {}
        bufs: dict[socket.socket, bytes] = {}
        t0 = time.monotonic()
        for s in live:
            try:
                s.send(req)
            except OSError:
                errors += 1
                dead.add(s)
                continue
            sent[s] = time.monotonic()
            bufs[s] = b""
            sel.register(s, selectors.EVENT_READ)
        write_ms = max(write_ms, (time.monotonic() - t0) * 1e3)
        deadline = time.monotonic() + round_max
        while bufs and time.monotonic() < deadline:
            for key, _ev in sel.select(timeout=0.5):
                s = key.fileobj
                status = _read_step(sel, bufs, s)
                if status == 200:
                    lat.append((time.monotonic() - sent[s]) * 1e3)
                elif status is not None:
                    errors += 1
                    dead.add(s)
        errors += len(bufs)  # not answered in time
        for s in bufs:
            sel.unregister(s)
            dead.add(s)
        live = [s for s in live if s not in dead]
        sel.close()
    lat.sort()
    return {
        "rounds": rounds, "requests": len(lat) + errors, "ok": len(lat), "errors": errors,
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else 0.0, "write_ms": write_ms,
        "seconds": round(time.monotonic() - t_start, 2),
    }


def hold_idle(port: int, count: int, batch: int = 200, hold_max: float = 180.0) -> int:
    """Open count keep-alive connections, one GET each, report, hold, then close.

    Protocol on stdout/stdin (line based):
      out: {"opened": N, "ok": N, "failed": N, "seconds": S}
      in:  "check" -> out: {"alive": N}      (a socket with EOF or an error is dead)
      in:  "burst R" -> out: burst()'s summary (R rounds of one request on every socket)
      in:  "close" or EOF or hold_max seconds -> close everything and exit
    """
    limit = raise_nofile()
    count = min(count, max(0, limit - 64))
    req = f"GET / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUser-Agent: bench-idle\r\n\r\n".encode()
    socks: list[socket.socket] = []
    ok = failed = 0
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    for start in range(0, count, batch):
        group = []
        for _ in range(min(batch, count - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((LOOPBACK, port))
            group.append(s)
        pending = {s: b"" for s in group}
        for s in group:
            sel.register(s, selectors.EVENT_WRITE)
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=0.5):
                s = key.fileobj
                if ev & selectors.EVENT_WRITE and s not in connected:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        sel.unregister(s)
                        pending.pop(s, None)
                        failed += 1
                        s.close()
                        continue
                    connected.add(s)
                    try:
                        s.send(req)
                    except OSError:
                        sel.unregister(s)
                        pending.pop(s, None)
                        failed += 1
                        s.close()
                        continue
                    sel.modify(s, selectors.EVENT_READ)
                elif ev & selectors.EVENT_READ:
                    status = _read_step(sel, pending, s)
                    if status == 200:
                        ok += 1
                        socks.append(s)
                    elif status is not None:
                        failed += 1
                        s.close()
        for s in pending:  # timed out
            sel.unregister(s)
            failed += 1
            s.close()
    print(
        json.dumps({"opened": len(socks), "ok": ok, "failed": failed,
                    "seconds": round(time.monotonic() - t0, 2)}),
        flush=True,
    )
    stop_at = time.monotonic() + hold_max
    stdin_sel = selectors.DefaultSelector()
    stdin_sel.register(sys.stdin, selectors.EVENT_READ)
    while time.monotonic() < stop_at:
        if not stdin_sel.select(timeout=max(0.0, stop_at - time.monotonic())):
            break
        line = sys.stdin.readline()
        if not line or line.strip() == "close":
            break
        if line.startswith("burst"):
            rounds = int(line.split()[1]) if len(line.split()) > 1 else 1
            print(json.dumps(burst(socks, req, rounds)), flush=True)
            continue
        if line.strip() == "check":
            alive = 0
            for s in socks:
                try:
                    alive += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
                except BlockingIOError:
                    alive += 1  # nothing to read: still open and idle
                except OSError:
                    pass
            print(json.dumps({"alive": alive}), flush=True)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "hold-idle":
        sys.exit(hold_idle(int(sys.argv[2]), int(sys.argv[3])))
    print("usage: _common.py hold-idle PORT COUNT", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- OTLP sink


class OtlpSink:
    """An OTLP/HTTP collector that accepts every export (200, an empty
    ExportTraceServiceResponse) and counts requests and bytes: what haproxyd exports to
    when a benchmark runs with tracing on. In a thread of this process, on loopback;
    `close()` stops it."""

    def __init__(self) -> None:
        import http.server
        import threading

        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                sink.requests += 1
                sink.bytes += length
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.requests = 0
        self.bytes = 0
        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.endpoint = f"http://{LOOPBACK}:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
