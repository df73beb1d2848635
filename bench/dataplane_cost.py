"""Instructions per proxied request in haproxyd, counted by callgrind: a noise-free
measure of the data plane's user-space cost, for comparing changes on a shared machine.

wrk's req/s on these 2-core VMs moves by 30 % from one minute to the next; an
instruction count does not (the same binary, inputs and environment give the same
count whatever else the machine does). It leaves out the kernel (syscalls and the TCP
stack, about 40 % of the proxy's time under load) and cache and branch effects, so it
ranks code changes; `compare.py` stays the judge of speed.

What one run does: an nginx backend (the one `compare.py` uses, answering `hello\\n`),
haproxyd with one worker under `valgrind --tool=callgrind --instr-atstart=no`, a warm-up,
then instrumentation switched on for N keep-alive GETs over `--connections` client
connections from this process (one request in flight on each, so no pipelining),
switched off, dumped; prints
instructions per request, in total and split by shared object (libpython, httptools,
uvloop, ...), and with `--top K` the K costliest functions. Loopback only, bounded in
count and time; every process is stopped by PID.

    python3 bench/dataplane_cost.py [--requests 4000] [--connections 8] [--top 15]
    python3 bench/dataplane_cost.py --new-connections   # a connection per request
    python3 bench/dataplane_cost.py --tracing 0.01      # tracing on, 1 % sampled
    python3 bench/dataplane_cost.py --tls-resume        # a resumed TLS handshake each
    python3 bench/dataplane_cost.py --tls-resume --proxy nginx   # the same, for a peer

`--proxy nginx|haproxy` counts a peer the same way (compare.py's config, one process:
nginx with `master_process off`), so a per-request figure can be set against nginx's
or HAProxy's own, instruction for instruction, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LOOPBACK,
    OtlpSink,
    Procs,
    _client_tls,
    free_port,
    raise_nofile,
    wait_http,
    which,
)
from compare import (
    REPO,
    _haproxyd_env,
    backend_conf,
    haproxy_conf,
    haproxyd_conf,
    make_cert,
    nginx_proxy_conf,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: dataplane-cost\r\n\r\n"
CLOSING_REQUEST = REQUEST[:-2] + b"Connection: close\r\n\r\n"
# A sampled trace, whatever the ratio: the warm-up's span (--tracing).
SAMPLED_REQUEST = REQUEST[:-2] + b"traceparent: 00-%s-%s-01\r\n\r\n" % (b"1" * 32, b"2" * 16)


def drive_new_connections(port: int, requests: int, timeout: float) -> int:
    """`requests` GETs, each on a connection of its own that the proxy closes after
    the response (`Connection: close`): accept, the head, the exchange and the close
    are all counted, as with wrk's `-H 'Connection: close'`."""
    done = 0
    deadline = time.monotonic() + timeout
    for _ in range(requests):
        if time.monotonic() > deadline:
            break
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(CLOSING_REQUEST)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            done += data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n")
    return done


def drive_tls_resumed(port: int, requests: int, timeout: float) -> tuple[int, int]:
    """`requests` GETs over TLS, each on a connection of its own that offers the
    previous connection's session (TLS 1.3 tickets, as wrk does on its reconnects), the
    response read whole so that the connection's tickets have arrived. Returns (answered
    200, resumed handshakes)."""
    ctx = _client_tls()
    session = None
    done = resumed = 0
    deadline = time.monotonic() + timeout
    for _ in range(requests):
        if time.monotonic() > deadline:
            break
        with (
            socket.create_connection((LOOPBACK, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, session=session) as sock,
        ):
            sock.sendall(CLOSING_REQUEST)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            done += data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n")
            resumed += sock.session_reused
            session = sock.session
    return done, resumed


def drive(port: int, requests: int, connections: int, timeout: float) -> int:
    """`requests` GETs spread over `connections` keep-alive connections, one in flight
    on each; returns how many got a complete 200 response."""
    socks = [
        socket.create_connection((LOOPBACK, port), timeout=timeout) for _ in range(connections)
    ]
    done = 0
    deadline = time.monotonic() + timeout
    try:
        for i in range(requests):
            if time.monotonic() > deadline:
                break
            sock = socks[i % connections]
            sock.sendall(REQUEST)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"hello\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("the proxy closed the connection")
                data += chunk
            done += data.startswith(b"HTTP/1.1 200")
    finally:
        for sock in socks:
            sock.close()
    return done


def control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120
    )


def totals(path: Path) -> int:
    """The instruction total of a callgrind dump (0 for one still being written)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):  # (a dump's `summary:` can read 0)
            return int(line.split()[1])
    return 0


def by_object(path: Path, top: int) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Self cost per shared object and the `top` costliest functions, from
    callgrind_annotate's listing."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    objects: dict[str, int] = {}
    functions: list[tuple[int, str]] = []
    row = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$")
    for line in out.splitlines():
        m = row.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        cost = int(m.group(1).replace(",", ""))
        where = m.group(2)
        obj = re.search(r"\[([^\]]+)\]\s*$", where)
        name = Path(obj.group(1)).name if obj else "?"
        objects[name] = objects.get(name, 0) + cost
        function = where.split(":", 1)[-1].split(" [")[0]
        functions.append((cost, f"{function} ({name})"))
    functions.sort(reverse=True)
    return objects, functions[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--top", type=int, default=0, help="list the K costliest functions")
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="each request on a new client connection (the connection-setup path)",
    )
    parser.add_argument(
        "--tls-resume",
        action="store_true",
        help="each request on a new TLS connection resuming the previous one's session",
    )
    parser.add_argument(
        "--proxy",
        choices=("haproxyd", "nginx", "haproxy"),
        default="haproxyd",
        help="which proxy to count (the peers with compare.py's configs)",
    )
    parser.add_argument(
        "--tracing",
        type=float,
        metavar="RATIO",
        help="run with `tracing: {enabled: true, sample_ratio: RATIO}` (the cost of tracing on)",
    )
    parser.add_argument(
        "--keep-dump", metavar="FILE", help="copy the callgrind dump to FILE (callgrind_annotate)"
    )
    args = parser.parse_args()
    requests = max(100, min(args.requests, 100_000))
    connections = max(1, min(args.connections, 64))
    missing = [tool for tool in ("valgrind", "callgrind_control", "nginx") if not which(tool)]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (apt-get install valgrind nginx)")
        return 0
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="haproxyd-cost-"))
    procs = Procs()
    sink = OtlpSink() if args.tracing is not None else None
    try:
        bport = free_port()
        backend = procs.start(
            "backend",
            [
                "nginx",
                "-p",
                str(tmp),
                "-e",
                str(tmp / "err.log"),
                "-c",
                str(backend_conf(tmp, bport, 1, 4096)),
            ],
            str(tmp / "backend.log"),
        )
        wait_http(bport, backend)
        port = free_port()
        tls = make_cert(tmp) if args.tls_resume else None
        out = tmp / "callgrind.out"
        grind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
        ]
        if args.proxy == "haproxyd":
            conf = haproxyd_conf(tmp, port, bport, 1, 0, tls)
            if sink is not None:
                # Spans go to a collector that accepts them (OtlpSink): their export,
                # encoding and posting in the exporter's thread, is part of the count.
                with conf.open("a") as f:
                    f.write(
                        f"tracing: {{enabled: true, sample_ratio: {args.tracing}, "
                        f"endpoint: '{sink.endpoint}'}}\n"
                    )
            command = [sys.executable, "-m", "haproxyd", "-c", str(conf)]
        elif args.proxy == "nginx":
            conf = nginx_proxy_conf(tmp, port, bport, 1, 64, 4096, tls)
            # One process, so that callgrind counts the one that serves.
            conf.write_text(conf.read_text().replace("master_process on;", "master_process off;"))
            command = [
                which("nginx"),
                "-p",
                str(tmp),
                "-e",
                str(tmp / "nginx-error.log"),
                "-c",
                str(conf),
            ]
        else:
            conf = haproxy_conf(tmp, port, bport, 1, 64, 4096, tls)
            command = [which("haproxy"), "-db", "-f", str(conf)]
        daemon = procs.start(
            args.proxy,
            grind + command,
            str(tmp / "proxy.log"),
            cwd=str(REPO),
            env=_haproxyd_env(),
        )
        wait_http(port, daemon, timeout=300, tls=bool(tls))  # slow start under valgrind
        resumed = None
        if tls:  # warm: the session cache, the ticket keys, pooled upstream connections
            drive_tls_resumed(port, 50, 300)
        else:
            drive(port, 200, connections, 300)  # warm: pooled upstream connections, caches
        if sink is not None:
            # The exporter's first batch imports the protobuf encoder and opens its
            # session (millions of instructions, once): before the count, not in it.
            with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
                sock.sendall(SAMPLED_REQUEST)
                sock.recv(65536)
            deadline = time.monotonic() + 60
            while sink.requests == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
        control(daemon.popen.pid, "-i", "on")
        began = time.monotonic()
        if tls:
            ok, resumed = drive_tls_resumed(port, requests, 600)
        elif args.new_connections:
            ok = drive_new_connections(port, requests, 600)
        else:
            ok = drive(port, requests, connections, 600)
        seconds = time.monotonic() - began
        if sink is not None:
            time.sleep(1.5)  # the exporter's last batch (it sends one a second)
        control(daemon.popen.pid, "-i", "off")
        control(daemon.popen.pid, "-d")
        dump = None
        deadline = time.monotonic() + 60
        while dump is None and time.monotonic() < deadline:
            dump = next((p for p in sorted(tmp.glob("callgrind.out.*")) if totals(p) > 0), None)
            time.sleep(0.5)
        if dump is None:
            print(f"no callgrind dump in {tmp}: {sorted(p.name for p in tmp.iterdir())}")
            return 1
        total = totals(dump)
        if args.keep_dump:
            shutil.copyfile(dump, args.keep_dump)
        if tls:
            over = f"new TLS connections, {resumed} resumed"
        elif args.new_connections:
            over = "new connections"
        else:
            over = f"{connections} connections"
        print(
            f"{args.proxy}: {ok}/{requests} requests answered 200 over {over} "
            f"({seconds:.0f} s under valgrind)"
        )
        print(f"instructions per request: {total / max(ok, 1):,.0f} (user space of the proxy)")
        if sink is not None:
            print(f"spans exported: {sink.requests} requests, {sink.bytes:,} bytes")
        objects, functions = by_object(dump, args.top)
        for name, cost in sorted(objects.items(), key=lambda kv: -kv[1]):
            if cost * 100 >= total:
                print(f"  {cost / max(ok, 1):>9,.0f}  {name}")
        for cost, function in functions:
            print(f"  {cost / max(ok, 1):>9,.0f}  {function}")
        return 0 if ok == requests else 1
    finally:
        procs.stop_all()
        if sink is not None:
            sink.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
