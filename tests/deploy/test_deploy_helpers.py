"""The two scripts the image runs besides haproxyd, exercised for real on loopback:
deploy/healthcheck.py (the HEALTHCHECK) against a running daemon, and
deploy/demo_backend.py (the compose stack's and the Locust scenarios' backends)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from helpers.daemon import Daemon, free_port, subprocess_env
from helpers.http1 import wait_until

REPO = Path(__file__).resolve().parents[2]
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
DEMO_BACKEND = REPO / "deploy" / "demo_backend.py"

sys.path.insert(0, str(REPO / "deploy"))
from healthcheck import admin_url  # noqa: E402


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def demo_backend() -> Iterator[Callable[[str], int]]:
    """Start deploy/demo_backend.py NAME on a free loopback port; returns the port."""
    started: list[subprocess.Popen] = []

    def start(name: str) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(DEMO_BACKEND), "--name", name, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
        )
        started.append(proc)

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            return port_open(port)

        wait_until(up, timeout=20, interval=0.05, what=f"demo backend {name} on {port}")
        return port

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def run_probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env or subprocess_env(),
    )


def get(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
        return r.status, dict(r.headers), r.read().decode()


def test_demo_backend_says_who_it_is(demo_backend: Callable[[str], int]) -> None:
    port = demo_backend("backend-7")
    status, headers, body = get(f"http://127.0.0.1:{port}/api/items?x=1")
    assert status == 200 and headers["X-Backend"] == "backend-7"
    assert body == "hello from backend-7 (GET /api/items?x=1, 0 bytes)\n"
    status, _, body = get(f"http://127.0.0.1:{port}/api/items", data=b'{"n": 1}')
    assert status == 200 and "POST /api/items, 8 bytes" in body
    assert get(f"http://127.0.0.1:{port}/healthz")[2] == "ok\n"


def test_probe_passes_on_a_running_daemon_and_fails_once_it_stops(
    daemon: Callable[..., Daemon], demo_backend: Callable[[str], int]
) -> None:
    port = demo_backend("backend-1")
    d = daemon([{"id": "backend-1", "address": f"127.0.0.1:{port}"}])
    # The proxy reaches the demo backend (the compose stack's data path).
    assert get(d.url("/"))[1]["X-Backend"] == "backend-1"
    result = run_probe("--config", str(d.config_path))
    assert result.returncode == 0, result.stderr
    assert run_probe("--config", str(d.config_path), "--require-healthy").returncode == 0
    d.stop()
    result = run_probe("--config", str(d.config_path), "--timeout", "2")
    assert result.returncode == 1
    assert "/api/v1/ha/status" in result.stderr


def test_require_healthy_fails_while_a_pool_has_no_backend(
    daemon: Callable[..., Daemon],
) -> None:
    d = daemon(pools={"web": {"backends": []}})
    assert run_probe("--config", str(d.config_path)).returncode == 0  # alive
    result = run_probe("--config", str(d.config_path), "--require-healthy")
    assert result.returncode == 1
    assert "healthy=false" in result.stderr and "web" in result.stderr


def test_probe_uses_the_token_when_reads_need_one(
    daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon(extra={"admin": {"token": "s3cret-token", "read_auth": True}})
    assert run_probe("--config", str(d.config_path)).returncode == 0  # token from the file
    without = yaml.safe_load(d.config_path.read_text())
    del without["admin"]["token"]
    bare = tmp_path / "no-token.yaml"
    bare.write_text(yaml.safe_dump(without))
    result = run_probe("--config", str(bare))
    assert result.returncode == 1 and "HTTP 401" in result.stderr
    env = {**subprocess_env(), "HAPROXYD_ADMIN_TOKEN": "s3cret-token"}
    assert run_probe("--config", str(bare), env=env).returncode == 0


def test_probe_of_any_url(demo_backend: Callable[[str], int]) -> None:
    port = demo_backend("backend-2")
    assert run_probe("--url", f"http://127.0.0.1:{port}/healthz").returncode == 0
    dead = free_port()
    deadline = time.monotonic() + 5
    while port_open(dead) and time.monotonic() < deadline:
        dead = free_port()
    result = run_probe("--url", f"http://127.0.0.1:{dead}/healthz", "--timeout", "2")
    assert result.returncode == 1 and str(dead) in result.stderr


def test_probe_fails_clearly_without_a_config(tmp_path: Path) -> None:
    result = run_probe("--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1 and "cannot read" in result.stderr


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("0.0.0.0:9901", "http://127.0.0.1:9901/api/v1/ha/status"),
        ("[::]:9901", "http://[::1]:9901/api/v1/ha/status"),
        ("127.0.0.1:19901", "http://127.0.0.1:19901/api/v1/ha/status"),
        ("[::1]:9901", "http://[::1]:9901/api/v1/ha/status"),
        ("haproxyd-1:9901", "http://haproxyd-1:9901/api/v1/ha/status"),
    ],
)
def test_wildcard_binds_are_probed_on_loopback(address: str, url: str) -> None:
    assert admin_url(address) == url


@pytest.mark.parametrize("address", ["9901", "[::1]9901", "host:port", "127.0.0.1:0"])
def test_bad_admin_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        admin_url(address)
