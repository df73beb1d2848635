"""The daemon under test, as a subprocess: `python -m haproxyd -c CONFIG.yaml`.

`Daemon` writes the YAML, starts the process with stderr captured to a file, waits until
the listener accepts connections (polling, with a deadline) and stops it with SIGTERM
(SIGKILL only as a fallback). `diag()` is what a failing assertion should show.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from haproxyd._build import dataplane_form
from haproxyd.admin.changes import deep_merge
from haproxyd.config.env import ENV_OVERRIDES
from helpers.http1 import Conn

REPO_ROOT = Path(__file__).resolve().parents[2]
# A ceiling, not a wait: readiness is the listener accepting (or the process exiting),
# and a loaded two-core machine can take many seconds to start a Python process.
STARTUP_TIMEOUT = 60.0
DAEMONS_ATTR = "_haproxyd_daemons"


def attach_daemon(node: Any, daemon: Daemon) -> None:
    """Have `daemon`'s stderr shown in the report if the test (`node`) fails."""
    daemons = getattr(node, DAEMONS_ATTR, None)
    if daemons is None:
        daemons = []
        setattr(node, DAEMONS_ATTR, daemons)
    daemons.append(daemon)


# "compiled" where the install could build the data plane with Cython (setup.py).
INSTALLED_FORM = dataplane_form()


def free_port() -> int:
    """A port that was free a moment ago (bind 127.0.0.1:0, then release it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago. All are held bound until the
    last is found: ports taken one after another, each released first, may repeat (the
    kernel can hand the one just released out again)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for name in ENV_OVERRIDES:  # the test's config file says what the daemon runs
        env.pop(name, None)
    return env


def run_cli(
    *args: str, timeout: float = 30.0, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m haproxyd ARGS` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "haproxyd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(env),
        cwd=cwd or REPO_ROOT,
    )


DEFAULT_TIMEOUTS = {
    "connect": "1s",
    "response": "5s",
    "idle": "10s",
    "client_header": "2s",
    "shutdown": "5s",
}
DEFAULT_LIMITS = {"max_header_bytes": 8192, "max_body_bytes": 0, "max_connections": 10000}


def make_config(
    *,
    port: int,
    admin_port: int,
    workdir: Path,
    backends: list[dict[str, Any]] | None = None,
    pools: dict[str, Any] | None = None,
    timeouts: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    tls: tuple[Path, Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The minimal config of the tests: one listener, one pool `web` (unless `pools`)."""
    listener: dict[str, Any] = {"address": f"127.0.0.1:{port}"}
    if tls is not None:
        listener["tls"] = {"cert": str(tls[0]), "key": str(tls[1])}
    if pools is None:
        pools = {"web": {"backends": backends or []}}  # the defaults, as users get them
    config: dict[str, Any] = {
        "listeners": [listener],
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "timeouts": {**DEFAULT_TIMEOUTS, **(timeouts or {})},
        "limits": {**DEFAULT_LIMITS, **(limits or {})},
        "access_log": {"enabled": True, "path": str(workdir / "access.log")},
        "pools": pools,
    }
    return deep_merge(config, extra or {})


class Daemon:
    """One haproxyd process. Use `start()`, then `conn()` / `port`; `stop()` at the end."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        name: str = "haproxyd",
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.env = env or {}  # added to the test's environment
        self.workdir = workdir
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.stderr_path = workdir / f"{name}.stderr"
        self.stdout_path = workdir / f"{name}.stdout"
        self.access_log_path = Path(config.get("access_log", {}).get("path", workdir / "none"))
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        # What follows `python -m haproxyd` (default: `-c CONFIG`); set before spawn().
        self.cli_args: list[str] | None = None
        # The listener's and admin ports were free picks (daemon fixture): start() may
        # pick others if they were taken meanwhile.
        self.free_picks = False
        self.tls = "tls" in config["listeners"][0]
        host, _, port = config["listeners"][0]["address"].rpartition(":")
        self.host = host
        self.port = int(port)

    # --- lifecycle -----------------------------------------------------------------

    def write_config(self) -> Path:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return self.config_path

    def spawn(self) -> Daemon:
        self.write_config()
        args = self.cli_args or ["-c", str(self.config_path)]
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "haproxyd", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=subprocess_env(self.env),
                cwd=self.workdir,
            )
        return self

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Daemon:
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except AssertionError:
                # Ports found free a moment before can be taken by another process of a
                # busy machine before the daemon binds them: take others (the daemon
                # fixture's own picks only; a test that chose a port meant that one).
                if not (self.free_picks and attempt < 2 and "in use" in self.stderr_text()):
                    raise
                port, admin_port = free_ports(2)
                self.config["listeners"][0]["address"] = f"{self.host}:{port}"
                self.config["admin"]["address"] = f"127.0.0.1:{admin_port}"
                self.port = port
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll-connect the listener, then the admin port, until both accept (the daemon
        binds its listeners, starts the admin API, then logs `listening`); fail early,
        with its stderr, if the process exits."""
        assert self.proc is not None
        host, _, port = str(self.config.get("admin", {}).get("address", ":0")).rpartition(":")
        targets = [(self.host, self.port)] + ([(host.strip("[]"), int(port))] if int(port) else [])
        deadline = time.monotonic() + timeout
        while targets:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise AssertionError(f"haproxyd exited with {rc} during startup\n{self.diag()}")
            with socket.socket(socket.AF_INET6 if ":" in targets[0][0] else socket.AF_INET) as sock:
                sock.settimeout(0.5)
                try:
                    sock.connect(targets[0])
                    targets.pop(0)
                    continue
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"haproxyd not accepting on {targets[0]} after {timeout}s\n{self.diag()}"
                )
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"haproxyd still running after {timeout}s\n{self.diag()}"
            ) from None
        return self.returncode

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL as a fallback. Returns the exit code (-9 when killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode

    # --- observation -----------------------------------------------------------------

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diag(self, limit: int = 6000) -> str:
        text = self.stderr_text()
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        state = "running" if self.alive() else f"exited rc={self.proc and self.proc.poll()}"
        return f"--- haproxyd ({state}) stderr ---\n{text}--- end of haproxyd stderr ---"

    def access_log(self, min_entries: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The access log's JSON lines, polling until there are at least `min_entries`."""
        deadline = time.monotonic() + timeout
        while True:
            entries = []
            with contextlib.suppress(FileNotFoundError):
                for line in self.access_log_path.read_text().splitlines():
                    if line.strip():
                        entries.append(json.loads(line))
            if len(entries) >= min_entries:
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"access log has {len(entries)} entries, expected {min_entries}\n{self.diag()}"
                )
            time.sleep(0.02)

    def proc_status(self, field: str) -> int:
        """A `/proc/PID/status` field in KiB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    # --- clients -----------------------------------------------------------------

    def conn(self, **kwargs: Any) -> Conn:
        return Conn(self.port, self.host, **kwargs)

    def tls_conn(self, context: ssl.SSLContext, **kwargs: Any) -> Conn:
        return Conn(
            self.port, self.host, ssl_context=context, server_hostname="localhost", **kwargs
        )

    def url(self, path: str = "/", scheme: str | None = None) -> str:
        scheme = scheme or ("https" if self.tls else "http")
        return f"{scheme}://{self.host}:{self.port}{path}"
