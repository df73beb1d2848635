"""Health checking at scale (issue 4): 1,000 backends with 1 s HTTP checks.

Measures, with the daemon as a subprocess:
- the daemon's CPU while it only probes (steady state, % of one core): target <= 15%;
- how fast a state change is seen: some backends stop answering (listening socket and
  open connections closed), the admin API is polled until the daemon marks them down;
  target <= interval x fall + timeout + 0.5 s.

The backends are raw asyncio servers answering a fixed 200, all in one helper process
(separate from the daemon, so the daemon's CPU is its own). Loopback only; every process
is stopped by PID; bounded in time.

    python3 bench/health_scale.py [--backends 1000] [--duration 20] [--stop 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]

BACKENDS_SCRIPT = r"""
import asyncio, sys
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"

class Answer(asyncio.Protocol):
    def __init__(self, conns):
        self.conns = conns
    def connection_made(self, transport):
        self.transport = transport
        self.conns.add(transport)
    def connection_lost(self, exc):
        self.conns.discard(self.transport)
    def data_received(self, data):
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(OK)

async def main(count):
    loop = asyncio.get_running_loop()
    servers, conns = [], []
    for _ in range(count):
        group = set()
        server = await loop.create_server(lambda g=group: Answer(g), "127.0.0.1", 0)
        servers.append(server)
        conns.append(group)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(" ".join(map(str, ports)), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        for index in map(int, line.split()):  # stop these backends: no listener, no conns
            servers[index].close()
            for transport in list(conns[index]):
                transport.abort()
        print("stopped", flush=True)

asyncio.run(main(int(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def states(port: int) -> dict[str, str]:
    data = admin(port, "/api/v1/ha/load-balancer/backends")
    items = data["backends"] if isinstance(data, dict) else data
    return {b["id"]: b["state"] for b in items}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20.0, help="CPU sample, seconds")
    parser.add_argument("--stop", type=int, default=20, help="backends to stop")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--fall", type=int, default=2)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="haproxyd-health-scale-"))
    try:
        # Pinned apart (when taskset exists), as bench/compare.py does: the daemon's
        # CPU is then its own core's, not shared with the backends' process.
        backends = subprocess.Popen(
            [*_pin(1), sys.executable, "-c", BACKENDS_SCRIPT, str(args.backends)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(backends)
        ports = [int(p) for p in backends.stdout.readline().split()]  # type: ignore[union-attr]
        admin_port = free_port()
        config = {
            "listeners": [{"address": f"127.0.0.1:{free_port()}"}],
            "admin": {"address": f"127.0.0.1:{admin_port}"},
            "pools": {
                "web": {
                    "health_checks": [
                        {
                            "type": "http",
                            "path": "/healthz",
                            "interval": args.interval,
                            "timeout": args.timeout,
                            "rise": 1,
                            "fall": args.fall,
                        }
                    ],
                    "backends": [
                        {"id": f"b{i}", "address": f"127.0.0.1:{port}"}
                        for i, port in enumerate(ports)
                    ],
                }
            },
        }
        config_path = tmp / "haproxyd.yaml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        env = dict(os.environ, PYTHONPATH=str(REPO))
        daemon = subprocess.Popen(
            [
                *_pin(0),
                sys.executable,
                "-m",
                "haproxyd",
                "--log-level",
                "warning",
                "-c",
                str(config_path),
            ],
            env=env,
            stderr=open(tmp / "daemon.log", "w"),  # noqa: SIM115
        )
        procs.append(daemon)

        deadline = time.monotonic() + 60
        while True:
            try:
                if all(s == "up" for s in states(admin_port).values()):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                print("backends did not all come up within 60 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        warm_up = 2 * args.interval
        time.sleep(warm_up)

        process = psutil.Process(daemon.pid)
        before = process.cpu_times()
        start = time.monotonic()
        time.sleep(args.duration)
        after = process.cpu_times()
        wall = time.monotonic() - start
        cpu = (after.user - before.user + after.system - before.system) / wall * 100

        victims = list(range(0, args.backends, max(1, args.backends // args.stop)))[: args.stop]
        names = {f"b{i}" for i in victims}
        backends.stdin.write(" ".join(map(str, victims)) + "\n")  # type: ignore[union-attr]
        backends.stdin.flush()  # type: ignore[union-attr]
        backends.stdout.readline()  # type: ignore[union-attr]
        stopped_at = time.monotonic()
        seen: dict[str, float] = {}
        bound = args.interval * args.fall + args.timeout + 0.5
        while len(seen) < len(names) and time.monotonic() - stopped_at < bound + 10:
            now_states = states(admin_port)
            now = time.monotonic() - stopped_at
            for name in names - set(seen):
                if now_states.get(name) == "down":
                    seen[name] = now
            time.sleep(0.05)
        latencies = sorted(seen.values())
        missing = len(names) - len(seen)
        worst = latencies[-1] if latencies else float("nan")

        print("| metric | value | target |\n|---|---|---|")
        print(f"| backends, HTTP check every {args.interval:g} s | {args.backends} | |")
        print(f"| daemon CPU while probing (% of one core) | {cpu:.1f} | <= 15 |")
        print(f"| state change seen, median (s) | {latencies[len(latencies) // 2]:.2f} | |")
        print(f"| state change seen, worst (s) | {worst:.2f} | <= {bound:.2f} |")
        print(f"| backends never seen down | {missing} | 0 |")
        ok = cpu <= 15 and missing == 0 and worst <= bound
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.environ.get("HEALTH_SCALE_KEEP"):
            print(f"kept {tmp} (config, daemon.log)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _pin(core: int) -> list[str]:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(core)]


if __name__ == "__main__":
    raise SystemExit(main())
