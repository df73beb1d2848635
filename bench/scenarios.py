"""Locust scenarios against a real haproxyd on loopback: what a failover or a reload
costs a client under load.

    python3 bench/scenarios.py                                # all three, 30 s each
    python3 bench/scenarios.py --only failover --duration 20 --users 10 --rps 20
    python3 bench/report.py bench/results/scenarios-YYYYmmdd-HHMMSS   # (done at the end)

Scenarios (each on a fresh set of processes):

  steady    bench/locustfile.py's steady mix, nothing else happens.
  failover  the same load; at 35 % of the run one backend is killed (SIGKILL: no
            goodbye, like a crashed host), at 65 % it is started again on the same port.
            The moments haproxyd's health checks mark it down and up are recorded too.
  reload    the same load; every --reload-every seconds the config file is rewritten
            (backend-1's weight flips between 1 and 3) and `haproxyd reload` is run (it
            sends SIGHUP and waits for the outcome).

What runs, all on 127.0.0.1 and each stopped by PID at the end (also on Ctrl-C): three
demo backends (deploy/demo_backend.py), one haproxyd (`python -m haproxyd -c FILE -p
PIDFILE`, weighted round robin, http checks every 1 s with rise/fall 2, retries 2), and
Locust headless (`--csv`, `--csv-full-history`, bounded by `-t`). Into the run directory
go, per scenario NAME: Locust's NAME_stats.csv, NAME_stats_history.csv,
NAME_failures.csv, NAME_exceptions.csv; NAME_events.json (the moments, as Unix times,
plus the run's parameters and haproxyd's final per-backend counters); the config and
every process's log. bench/report.py then writes report.md and NAME.png (unless
--no-report).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPBACK, Proc, Procs, free_port, log_tail

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEMO_BACKEND = REPO / "deploy" / "demo_backend.py"
LOCUSTFILE = BENCH / "locustfile.py"
SCENARIOS = ("steady", "failover", "reload")
BACKENDS = ("backend-1", "backend-2", "backend-3")
VICTIM = "backend-2"
POLL = 0.25  # seconds between looks at the admin API during a run


def now() -> float:
    return time.time()


@dataclass
class Run:
    """One scenario's processes and what happened to them."""

    name: str
    out: Path
    args: argparse.Namespace
    procs: Procs = field(default_factory=Procs)
    ports: dict[str, int] = field(default_factory=dict)
    backends: dict[str, Proc] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    proxy: Proc | None = None
    proxy_port: int = 0
    admin_port: int = 0
    weight_flip: int = 1

    # -- files -------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.out / f"{self.name}_haproxyd.yaml"

    @property
    def pid_path(self) -> Path:
        return self.out / f"{self.name}_haproxyd.pid"

    def log(self, what: str) -> str:
        return str(self.out / f"{self.name}_{what}.log")

    def event(self, kind: str, label: str, **detail: Any) -> None:
        entry = {"time": round(now(), 3), "kind": kind, "label": label, **detail}
        self.events.append(entry)
        print(f"  [{self.name}] {kind}: {label}", flush=True)

    def write_config(self) -> None:
        backends = [
            {
                "id": name,
                "address": f"{LOOPBACK}:{self.ports[name]}",
                "weight": (3 if self.weight_flip < 0 else 1) if name == "backend-1" else 1,
            }
            for name in BACKENDS
        ]
        config = {
            "node": {"id": f"bench-{self.name}"},
            "listeners": [{"address": f"{LOOPBACK}:{self.proxy_port}"}],
            "admin": {"address": f"{LOOPBACK}:{self.admin_port}"},
            "timeouts": {
                "connect": "1s",
                "response": "10s",
                "idle": "60s",
                "client_header": "10s",
                "shutdown": "5s",
            },
            "access_log": (
                {"enabled": True, "path": str(self.out / f"{self.name}_access.log")}
                if self.args.access_log
                else {"enabled": False}
            ),
            "pools": {
                "web": {
                    "balancer": {"algorithm": "weighted_round_robin"},
                    "health_checks": [
                        {
                            "type": "http",
                            "path": "/healthz",
                            "interval": "1s",
                            "timeout": "500ms",
                            "rise": 2,
                            "fall": 2,
                        }
                    ],
                    "retries": {"attempts": 2},
                    "backends": backends,
                }
            },
        }
        # Write then rename: a reload never reads a half-written file.
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.config_path)

    # -- admin API ---------------------------------------------------------------------

    def admin(self, path: str, timeout: float = 2.0) -> Any:
        url = f"http://{LOOPBACK}:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())

    def backend_states(self) -> dict[str, str]:
        data = self.admin("/api/v1/ha/load-balancer/backends")
        return {b["id"]: b["state"] for b in data["backends"]}

    def wait_for(self, what: str, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proxy is not None and self.proxy.popen.poll() is not None:
                raise RuntimeError(f"haproxyd exited:\n{log_tail(self.proxy.log_path)}")
            try:
                if predicate():
                    return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: {what} not reached within {timeout:.0f}s ({last})")

    # -- processes ---------------------------------------------------------------------

    def start_backend(self, name: str) -> None:
        argv = [
            sys.executable,
            str(DEMO_BACKEND),
            "--name",
            name,
            "--host",
            LOOPBACK,
            "--port",
            str(self.ports[name]),
        ]
        proc = self.procs.start(name, argv, self.log(name))
        self.backends[name] = proc

        def answers() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_tail(proc.log_path)}")
            url = f"http://{LOOPBACK}:{self.ports[name]}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200

        self.wait_for(f"{name} answering", answers, 20)

    def kill_backend(self, name: str) -> None:
        proc = self.backends.pop(name)
        pid = proc.popen.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        proc.popen.wait(10)
        self.procs.stop(proc)  # already dead: just forgets it
        self.event("kill", f"{name} killed (SIGKILL)", target=name, pid=pid)

    def start(self) -> None:
        for name in BACKENDS:
            self.ports[name] = free_port()
        self.proxy_port, self.admin_port = free_port(), free_port()
        for name in BACKENDS:
            self.start_backend(name)
        self.write_config()
        argv = [
            sys.executable,
            "-m",
            "haproxyd",
            "-c",
            str(self.config_path),
            "-p",
            str(self.pid_path),
            "--log-level",
            "warning",
        ]
        self.proxy = self.procs.start("haproxyd", argv, self.log("haproxyd"), cwd=str(self.out))
        self.wait_for(
            "every backend up in haproxyd",
            lambda: set(self.backend_states().values()) == {"up"},
            30,
        )

    def reload(self) -> None:
        self.weight_flip = -self.weight_flip
        self.write_config()
        weight = 3 if self.weight_flip < 0 else 1
        began = now()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "haproxyd",
                "reload",
                "-c",
                str(self.config_path),
                "-p",
                str(self.pid_path),
                "--timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.out,
        )
        outcome = "ok" if result.returncode == 0 else "error"
        entry = {
            "time": round(began, 3),
            "kind": "reload",
            "label": f"reload {outcome} (backend-1 weight {weight})",
            "result": outcome,
            "seconds": round(now() - began, 3),
        }
        if result.returncode != 0:
            entry["errors"] = (result.stderr or result.stdout).strip()[-500:]
        self.events.append(entry)
        print(f"  [{self.name}] {entry['label']} in {entry['seconds']:.2f}s", flush=True)


def locust_argv(run: Run, prefix: Path) -> list[str]:
    a = run.args
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(a.users),
        "-r",
        str(a.users),
        "-t",
        f"{a.duration}s",
        "--host",
        f"http://{LOOPBACK}:{run.proxy_port}",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "0",
    ]


def plan(run: Run, t0: float) -> list[tuple[float, str]]:
    """(monotonic time, action) of the scenario's interventions."""
    d = run.args.duration
    if run.name == "failover":
        return [(t0 + 0.35 * d, "kill"), (t0 + 0.65 * d, "restart")]
    if run.name == "reload":
        every = run.args.reload_every
        count = max(1, min(int(0.8 * d / every), 200))
        return [(t0 + 0.1 * d + i * every, "reload") for i in range(count)]
    return []


def drive(run: Run, locust: Proc) -> None:
    """Carry out the plan while Locust runs; record health transitions as they happen."""
    # Time zero: the first request through the proxy (Locust needs a moment to start).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and locust.popen.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            stats = run.admin("/api/v1/ha/load-balancer/stats")
            if sum(p["requests"] for p in stats["pools"]) > 0:
                break
        time.sleep(0.1)
    t0 = time.monotonic()
    run.event("load", "first request through the proxy")
    todo = plan(run, t0)
    end = t0 + run.args.duration + 60
    seen = {name: "up" for name in BACKENDS}
    next_poll = 0.0
    while locust.popen.poll() is None and time.monotonic() < end:
        moment = time.monotonic()
        while todo and todo[0][0] <= moment:
            _, action = todo.pop(0)
            if action == "kill":
                run.kill_backend(VICTIM)
            elif action == "restart":
                run.start_backend(VICTIM)
                run.event("start", f"{VICTIM} started again", target=VICTIM)
            elif action == "reload":
                run.reload()
        if moment >= next_poll and run.name == "failover":
            next_poll = moment + POLL
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                for name, state in run.backend_states().items():
                    if state != seen.get(name):
                        kind = "down" if state == "down" else "up" if state == "up" else state
                        run.event(kind, f"haproxyd marks {name} {state}", target=name)
                        seen[name] = state
        time.sleep(0.05)


def run_scenario(name: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    run = Run(name, out, args)
    print(f"scenario {name}: starting backends and haproxyd", flush=True)
    started = now()
    locust_rc: int | None = None
    final: dict[str, Any] = {}
    try:
        run.start()
        env = {**os.environ, "BENCH_RPS": str(args.rps)}
        locust = run.procs.start(
            "locust", locust_argv(run, out / name), run.log("locust"), cwd=str(out), env=env
        )
        print(
            f"scenario {name}: {args.users} users x {args.rps} req/s for {args.duration}s",
            flush=True,
        )
        drive(run, locust)
        try:
            locust_rc = locust.popen.wait(args.duration + 90)
        except subprocess.TimeoutExpired:
            print(f"scenario {name}: locust did not finish; stopping it", file=sys.stderr)
        run.event("end", "load finished")
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            stats = run.admin("/api/v1/ha/load-balancer/stats")
            status = run.admin("/api/v1/ha/status")
            final = {
                "backends": {
                    b["id"]: {k: b[k] for k in ("requests", "errors", "failures", "state")}
                    for p in stats["pools"]
                    for b in p["backends"]
                },
                "no_backend": sum(p["no_backend"] for p in stats["pools"]),
                "reloads": status["reloads"],
                "version": status["version"],
            }
    finally:
        run.procs.stop_all()
    record = {
        "scenario": name,
        "started": round(started, 3),
        "duration": args.duration,
        "users": args.users,
        "rps_per_user": args.rps,
        "proxy": f"http://{LOOPBACK}:{run.proxy_port}/",
        "locust_exit": locust_rc,
        "events": run.events,
        "haproxyd": final,
    }
    (out / f"{name}_events.json").write_text(json.dumps(record, indent=2) + "\n")
    if locust_rc not in (0, None):
        print(
            f"scenario {name}: locust exited {locust_rc}:\n{log_tail(run.log('locust'))}",
            file=sys.stderr,
        )
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma list of scenarios (default: {','.join(SCENARIOS)})",
    )
    ap.add_argument("--duration", type=int, default=30, help="seconds of load (5-600)")
    ap.add_argument("--users", type=int, default=10, help="Locust users (1-200)")
    ap.add_argument("--rps", type=float, default=20, help="requests/s per user (0.1-100)")
    ap.add_argument("--reload-every", type=float, default=3.0, help="seconds (reload, >= 1)")
    ap.add_argument("--out", help="run directory (default bench/results/scenarios-TIME)")
    ap.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="run haproxyd without its JSON access log (default: NAME_access.log)",
    )
    ap.add_argument("--no-report", action="store_true", help="do not run bench/report.py")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    if not 5 <= args.duration <= 600 or not 1 <= args.users <= 200:
        ap.error("--duration must be 5-600 and --users 1-200")
    if not 0.1 <= args.rps <= 100 or args.reload_every < 1:
        ap.error("--rps must be 0.1-100 and --reload-every at least 1")
    if importlib.util.find_spec("locust") is None:
        print(
            "error: locust is not installed: python3 -m pip install -e '.[bench]'", file=sys.stderr
        )
        return 2
    out = Path(args.out or BENCH / "results" / time.strftime("scenarios-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        for name in names:
            record = run_scenario(name, out, args)
            status |= int(record["locust_exit"] not in (0,))
    except KeyboardInterrupt:
        print("interrupted; every process started here was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"results in {out}")
    if not args.no_report:
        import report

        status |= report.main([str(out)])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
