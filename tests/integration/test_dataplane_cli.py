"""The command line and the process: `check`, `version`, startup failures, and SIGTERM
draining in-flight requests before exiting 0."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request

import pytest
from helpers.daemon import (
    INSTALLED_FORM,
    REPO_ROOT,
    free_ports,
    make_config,
    run_cli,
    subprocess_env,
)
from helpers.http1 import build_request, connect_refused, wait_until

pytestmark = pytest.mark.timeout(60)

DUMMY = {"id": "b1", "address": "127.0.0.1:9"}


def _project_version() -> str:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_version():
    result = run_cli("version")
    assert result.returncode == 0, result.stderr
    assert _project_version() in result.stdout
    assert f"(data plane: {INSTALLED_FORM})" in result.stdout


def test_pure_python_switch_runs_the_data_plane_interpreted():
    result = run_cli("version", env={"HAPROXYD_PURE_PYTHON": "1"})
    assert result.returncode == 0, result.stderr
    assert "(data plane: interpreted)" in result.stdout


def test_check_accepts_a_good_config(tmp_path):
    import yaml

    port, admin_port = free_ports(2)
    config = make_config(
        port=port,
        admin_port=admin_port,
        workdir=tmp_path,
        backends=[{"id": "b1", "address": "127.0.0.1:9001"}],
    )
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration OK" in result.stdout


BAD_CONFIG = """\
# a config with three mistakes, on lines 7, 11 and 12
admin:
  address: 127.0.0.1:19901
limits: {max_header_bytes: 8192, max_body_bytes: 0, max_connections: 10000}

listeners:
  - address: localhost:notaport
timeouts:
  response: 5s
  idle: 10s
  connect: soon
  respons: 30s
pools:
  web:
    backends:
      - {id: b1, address: 127.0.0.1:9001}
"""


def _find_error(output: str, path_re: str, line: int) -> bool:
    """Whether some output line names the YAML path and the line number."""
    return any(
        re.search(path_re, text) and re.search(rf"(?<![\d.]){line}(?!\d)", text)
        for text in output.splitlines()
    )


def test_check_lists_every_error_with_path_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = run_cli("check", "-c", str(path))
    output = (result.stdout + result.stderr).replace(str(path), "CONFIG")
    assert result.returncode == 1, output
    assert "configuration OK" not in output
    assert "Traceback" not in output, output
    assert _find_error(output, r"listeners\W+0\W+address", 7), output
    assert _find_error(output, r"timeouts\W+connect", 11), output
    assert _find_error(output, r"timeouts\W+respons\b", 12), output


def test_bad_config_at_startup_exits_non_zero_with_a_clear_message(daemon):
    d = daemon([DUMMY], extra={"timeouts": {"connect": "soon"}}, start=False)
    d.spawn()
    rc = d.wait_exit(15)
    err = d.stderr_text()
    assert rc != 0, err
    assert re.search(r"timeouts\W+connect", err), err
    assert "Traceback" not in err, err


def test_missing_config_file_exits_non_zero(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run_cli("-c", str(missing), timeout=15)
    assert result.returncode != 0
    assert "nope.yaml" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_busy_port_exits_non_zero_with_a_clear_message(daemon):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = daemon([DUMMY], extra={"listeners": [{"address": f"127.0.0.1:{port}"}]}, start=False)
        d.spawn()
        rc = d.wait_exit(15)
    err = d.stderr_text()
    assert rc != 0, err
    assert f"cannot listen: 127.0.0.1:{port}: Address already in use" in err, err
    assert "Traceback" not in err, err


def test_global_options_after_the_subcommand_are_honoured(backend, daemon, tmp_path):
    plain = daemon([backend()])  # the default level, which the option changes
    wait_until(lambda: " INFO haproxyd: listening on" in plain.stderr_text(), what="INFO")
    pid_file = tmp_path / "haproxyd.pid"
    d = daemon([backend()], start=False)
    d.cli_args = ["run", "-c", str(d.config_path), "-p", str(pid_file), "--log-level", "warning"]
    d.start()
    wait_until(pid_file.exists, what="the pid file")  # written once started: logged by then
    assert pid_file.read_text().strip() == str(d.pid)
    assert " INFO " not in d.stderr_text(), d.stderr_text()


@pytest.mark.parametrize(
    "args", [["--log-level", "loud", "version"], ["version", "--log-level", "loud"]]
)
def test_an_unknown_log_level_is_an_error(args):
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "invalid choice: 'loud'" in result.stderr, result.stderr
    assert "haproxyd 0" not in result.stdout  # the command did not run


def test_help_lists_the_commands_but_not_the_worker():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "{run,check,reload,version,demo}" in result.stdout, result.stdout
    assert "_worker" not in result.stdout, result.stdout


def test_sigterm_drains_in_flight_request_then_exits_0(backend, daemon):
    b1 = backend()
    d = daemon([b1], timeouts={"shutdown": "10s"})
    idle = d.conn()
    busy = d.conn(timeout=15)
    try:
        assert idle.request("GET", "/echo?idle").status == 200
        busy.send(build_request("GET", "/slow?ms=2000"))
        wait_until(lambda: any(r.path == "/slow" for r in b1.requests), what="slow request")
        d.send_signal(signal.SIGTERM)
        # stop accepting: the listener goes away while the slow request is in flight
        wait_until(lambda: connect_refused(d.port), timeout=5, what="listener closed")
        # the idle keep-alive connection is closed, not left to the end
        assert idle.wait_closed(5), "idle connection kept open during shutdown"
        r = busy.read_response(timeout=15)
        assert r.status == 200, r
        assert r.json()["target"] == "/slow?ms=2000"
    finally:
        idle.close()
        busy.close()
    rc = d.wait_exit(15)
    assert rc == 0, d.diag()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_daemon_exits_0_on_signal(backend, daemon, sig):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        assert c.request("GET", "/echo").status == 200
    d.send_signal(sig)
    assert d.wait_exit(10) == 0, d.diag()


def test_demo_with_the_admin_port_busy_takes_a_free_one_and_prints_the_status_page(tmp_path):
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 9901))
        held.listen()
    except OSError:
        pass  # busy already, which is the case under test
    out = tmp_path / "demo.stdout"
    with open(out, "w") as stdout, open(tmp_path / "demo.stderr", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "haproxyd", "demo", "--port", "0", "--duration", "60"],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
            cwd=tmp_path,
        )
    try:
        wait_until(
            lambda: "status page:" in out.read_text() or proc.poll() is not None,
            timeout=60,
            what="the demo's status page line",
        )
        text = out.read_text()
        assert "admin port 9901 is busy; using a free port instead" in text, text
        url = re.search(r"status page: (http://127\.0\.0\.1:(\d+)/)", text)
        assert url and url.group(2) != "9901", text
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        held.close()
    assert rc == 0, (tmp_path / "demo.stderr").read_text()
    assert "Traceback" not in (tmp_path / "demo.stderr").read_text()
