"""`haproxyd reload` signals only the haproxyd daemon of the file it was given: never the
process a stale pid file names, never anything for an invalid or missing file, and
every refusal is one line on stderr with exit 1 (no traceback).

A stale pid file is played by a canary: an unrelated process that notes each SIGHUP it
gets (a real one would die of it)."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.daemon import run_cli
from helpers.process import admin_json, wait_status

pytestmark = pytest.mark.timeout(90)

CANARY = """
import signal
def note(signum, frame):
    print(signal.Signals(signum).name, flush=True)
signal.signal(signal.SIGHUP, note)
signal.signal(signal.SIGUSR1, note)
print("ready", flush=True)
while True:
    signal.pause()
"""


class Canary:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CANARY], stdout=subprocess.PIPE, text=True
        )
        assert self._line() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the canary said nothing in {timeout}s"
        return self.proc.stdout.readline().strip()

    def signals(self) -> list[str]:
        """Every signal it got so far. The SIGUSR1 sent now is noted after any signal
        sent before it (pending signals are handled lowest number first)."""
        self.proc.send_signal(signal.SIGUSR1)
        seen = []
        while (line := self._line()) != "SIGUSR1":
            seen.append(line)
        return seen

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.stop()


def refused(result: subprocess.CompletedProcess, needle: str) -> str:
    """A refusal: exit 1 and one line naming `needle`."""
    err = result.stderr
    assert result.returncode == 1, result.stdout + err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "No such file"),
        ("", "empty"),
        ("   \n", "empty"),
        ("haproxyd\n", "expected one process id"),
        ("0\n", "expected one process id"),  # kill(0): our own process group
        ("-1\n", "expected one process id"),  # kill(-1): every process we may signal
        ("12 34\n", "expected one process id"),
        ("٣٤\n", "expected one process id"),
    ],
)
def test_a_bad_pid_file_is_one_line_and_exit_1(backend, daemon, tmp_path, content, needle):
    d = daemon([backend("b1")])
    pid_file = tmp_path / "haproxyd.pid"
    if content is not None:
        pid_file.write_text(content)
    err = refused(run_cli("reload", "-c", str(d.config_path), "-p", str(pid_file)), needle)
    assert str(pid_file) in err
    assert admin_json(d, "/api/v1/ha/status")["reloads"] == {"ok": 0, "error": 0}


def test_a_stale_pid_file_never_signals_the_process_it_names(backend, daemon, tmp_path, canary):
    d = daemon([backend("b1")])
    pid_file = tmp_path / "haproxyd.pid"
    pid_file.write_text(f"{canary.pid}\n")
    err = refused(run_cli("reload", "-c", str(d.config_path), "-p", str(pid_file)), "stale")
    assert str(canary.pid) in err and str(d.pid) in err
    assert canary.signals() == []
    # With the daemon gone, the pid file is all there is: still nothing is signalled.
    d.stop()
    refused(
        run_cli("reload", "-c", str(d.config_path), "-p", str(pid_file)),
        "cannot reach the admin API",
    )
    assert canary.signals() == []


def test_an_invalid_or_missing_file_signals_nothing(backend, daemon, tmp_path, canary):
    d = daemon([backend("b1")])
    pid_file = tmp_path / "haproxyd.pid"
    pid_file.write_text(f"{canary.pid}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(d.config_path.read_text() + "bogus: 1\n")
    for path, needle in ((tmp_path / "missing.yaml", "cannot read"), (bad, "bogus")):
        result = run_cli("reload", "-c", str(path), "-p", str(pid_file))
        assert result.returncode == 1, result.stdout + result.stderr
        assert needle in result.stderr and "nothing signalled" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert canary.signals() == []
    assert admin_json(d, "/api/v1/ha/status")["reloads"] == {"ok": 0, "error": 0}


def test_the_daemon_of_another_file_is_not_signalled(backend, daemon, tmp_path):
    d = daemon([backend("b1")])
    other = tmp_path / "other.yaml"  # same admin address: it reaches d, which runs d's file
    other.write_text(d.config_path.read_text())
    err = refused(run_cli("reload", "-c", str(other)), "nothing signalled")
    assert str(d.config_path) in err and str(other) in err
    # Its own file, by a relative path and a symlink: the same file, reloaded.
    link = tmp_path / "link.yaml"
    link.symlink_to(d.config_path)
    for path in (str(link), d.config_path.name):
        result = run_cli("reload", "-c", path, cwd=d.config_path.parent)
        assert result.returncode == 0, result.stdout + result.stderr
    wait_status(d, lambda s: s["reloads"] == {"ok": 2, "error": 0}, what="two reloads")


@pytest.fixture
def client_cert(tls_files, tmp_path) -> tuple[Path, Path, Path]:
    """(the CA of the admin's clients as PEM, a client certificate, its key)."""
    ca = tmp_path / "clients-ca.pem"
    tls_files.ca.cert_pem.write_to_path(str(ca))
    issued = tls_files.ca.issue_cert("operator@example")
    cert, key = tmp_path / "operator.pem", tmp_path / "operator.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return ca, cert, key


def test_reload_through_an_admin_api_with_client_certificates(
    backend, daemon, tls_files, client_cert
):
    ca, cert, key = client_cert
    tls = {"cert": str(tls_files.cert), "key": str(tls_files.key), "client_ca": str(ca)}
    d = daemon([backend("b1")], extra={"admin": {"tls": tls}})
    path = str(d.config_path)
    refused(run_cli("reload", "-c", path), "--admin-cert")
    result = run_cli("reload", "-c", path, "--admin-cert", str(cert), "--admin-key", str(key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration version 2" in result.stdout
