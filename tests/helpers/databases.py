"""Private database servers for the `database` health check tests: a PostgreSQL and a
MariaDB of the test's own, each in a fresh data directory on a free loopback port,
stopped by PID at the end. So no test depends on a server someone left running, and
the one that creates a user creates it on a server that is thrown away.

`start_postgres()` / `start_mariadb()` return a `Server`, or raise `Unavailable` (the
tests skip, saying which package provides the server) when its programs are missing.
PostgreSQL refuses to run as root: as root, it runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STARTUP_CEILING = 60.0  # a ceiling: readiness is the server answering


class Unavailable(Exception):
    pass


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    datadir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.datadir, ignore_errors=True)


def _program(name: str, *patterns: str) -> str:
    found = shutil.which(name) or next(
        (p for pattern in patterns for p in sorted(glob.glob(pattern))[::-1]), None
    )
    if found is None:
        raise Unavailable(name)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(server: Server, ready: list[str], log: Path) -> Server:
    deadline = time.monotonic() + STARTUP_CEILING
    while subprocess.run(ready, capture_output=True).returncode != 0:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{ready[0]} never answered:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return server


def _start(
    datadir: Path,
    init: list[str],
    serve: Callable[[int], list[str]],
    query: Callable[[int, str], list[str]],
    user: dict[str, int],
) -> Server:
    """Initialise `datadir`, start the server on a free port, wait until `query` gets
    an answer, and create the database `test`."""
    subprocess.run(init, check=True, capture_output=True, timeout=120, **user)
    port = _free_port()
    log = datadir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            serve(port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **user
        )
    server = _wait(Server(port, proc, datadir), query(port, "SELECT 1"), log)
    subprocess.run(query(port, "CREATE DATABASE test"), check=True, capture_output=True, timeout=60)
    return server


def start_postgres() -> Server:
    paths = ("/usr/lib/postgresql/*/bin/{}",)
    initdb = _program("initdb", *(p.format("initdb") for p in paths))
    postgres = _program("postgres", *(p.format("postgres") for p in paths))
    psql = _program("psql")
    user: dict[str, int] = {}
    datadir = Path(tempfile.mkdtemp(prefix="haproxyd-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(datadir, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    data = str(datadir / "data")
    return _start(
        datadir,
        [initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"],
        lambda port: [
            postgres,
            "-D",
            data,
            "-p",
            str(port),
            "-k",
            str(datadir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        lambda port, sql: [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", sql],
        user,
    )


def start_mariadb() -> Server:
    install = _program("mariadb-install-db")
    mariadbd = _program("mariadbd", "/usr/sbin/mariadbd")
    client = _program("mariadb", "/usr/bin/mysql")
    datadir = Path(tempfile.mkdtemp(prefix="haproxyd-mariadb-"))
    common = [
        "--no-defaults",
        f"--datadir={datadir / 'data'}",
        f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
    ]
    return _start(
        datadir,
        [install, *common, "--auth-root-authentication-method=normal", "--skip-test-db"],
        lambda port: [
            mariadbd,
            *common,
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={datadir / 'sock'}",
            f"--pid-file={datadir / 'pid'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ],
        lambda port, sql: [client, "-h127.0.0.1", f"-P{port}", "-uroot", "-e", sql],
        {},
    )
