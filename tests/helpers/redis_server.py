"""redis-server processes for tests: each on its own free port, stopped by its PID.

Used by the health tests (a primary and a replica) and the cluster tests (the cluster's
Redis, which a test may kill and restart on the same port).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from typing import Any

import pytest

from helpers.daemon import free_port


class RedisProcesses:
    """redis-server processes on free ports, each stopped by its PID."""

    def __init__(self, directory: Any) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        self.directory = directory
        self.procs: list[subprocess.Popen] = []
        self.by_port: dict[int, subprocess.Popen] = {}

    def spawn(self, name: str, *extra: str, port: int | None = None) -> int:
        """Start a redis-server (on `port`, or a free one) and wait until it answers."""
        port = port or free_port()
        argv = [
            self.binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--dbfilename",
            f"{name}.rdb",
            "--logfile",
            str(self.directory / f"{name}.log"),
            "--daemonize",
            "no",
            *extra,
        ]
        return self._start(name, argv, port)

    def _start(self, name: str, argv: list[str], port: int) -> int:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        self.by_port[port] = proc
        deadline = time.monotonic() + 60  # a ceiling for a loaded machine
        while True:  # poll until it answers (a password-protected one says NOAUTH)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return port
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {name} on {port} did not start")
            time.sleep(0.02)

    def spawn_sentinel(self, name: str, primary_port: int, service: str = "mymaster") -> int:
        """A redis-server in Sentinel mode watching the primary on `primary_port`."""
        port = free_port()
        conf = self.directory / f"{name}.conf"  # Sentinel rewrites its config file
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
        )
        return self._start(name, [self.binary, str(conf), "--sentinel"], port)

    def kill(self, port: int) -> None:
        """SIGKILL the server on `port` (an outage), and wait until it is gone."""
        proc = self.by_port.pop(port)
        proc.kill()
        proc.wait(timeout=5)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, 9)
                proc.wait()


