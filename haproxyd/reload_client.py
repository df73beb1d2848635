"""`haproxyd reload`: signal a running daemon and report the outcome synchronously.

The daemon is found through its admin API (`pid` and `config_path` in
/api/v1/ha/status), and the outcome is read back from the same endpoint (`reloads`,
`last_reload`), so the operator gets exit 0 or 1 with the errors, like HAProxy's master
CLI `reload` command, instead of nginx's fire-and-forget `-s reload`.

SIGHUP goes to one process only, and only once it is known to be the haproxyd daemon of
this config file: the file must validate (an invalid one would be rejected by the
daemon anyway: nothing is sent), the admin API named in the file must answer with a
daemon that runs this same file, a pid file given with `-p` must name that daemon (a
stale pid file can name any process, which SIGHUP would kill), and the process must be
haproxyd. The signal goes through a pidfd opened before the process is inspected, so a
pid reused in between is not signalled. Every refusal is one line and exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from haproxyd.config import ConfigError, load_config

if TYPE_CHECKING:
    from haproxyd.config import AdminConfig

STATUS_PATH = "/api/v1/ha/status"
POLL_INTERVAL = 0.1


class ReloadRefused(Exception):
    """Why nothing was signalled (or no outcome was read): one line for the operator."""


def reload_daemon(
    *,
    config_path: str,
    pid_file: str | None,
    timeout: float,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> int:
    try:
        return _reload(config_path, pid_file, timeout, (client_cert, client_key))
    except ReloadRefused as exc:
        print(f"haproxyd: {exc}", file=sys.stderr)
        return 1


def _reload(
    config_path: str, pid_file: str | None, timeout: float, client: tuple[str | None, str | None]
) -> int:
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        raise ReloadRefused(
            "configuration invalid: nothing signalled, the running daemon keeps its config"
        ) from None
    listed_pid = _read_pid(pid_file) if pid_file else None
    admin = AdminClient(cfg.admin, *client)
    before = admin.status()
    pid = _verified_pid(before, config_path, pid_file, listed_pid, admin.url)
    done_before = sum(before["reloads"].values())
    _send_sighup(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
        try:
            after = admin.status()
        except ReloadRefused:
            continue  # busy applying the reload: ask again
        if sum(after["reloads"].values()) > done_before:
            last = after.get("last_reload") or {}
            if last.get("result") == "ok":
                print(f"reloaded: configuration version {after['config_version']}")
                return 0
            for line in last.get("errors", []):
                print(line, file=sys.stderr)
            raise ReloadRefused("reload rejected; the running config stays")
    raise ReloadRefused(f"no reload outcome within {timeout:g}s")


class AdminClient:
    """GET /api/v1/ha/status of the admin API a config file names (its token, and with
    admin.tls HTTPS pinned to the certificate in the file: the daemon serves that one,
    under whatever name or address)."""

    def __init__(self, admin: AdminConfig, cert: str | None, key: str | None) -> None:
        host = admin.address.host
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard bind
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if admin.tls is not None else "http"
        self.url = f"{scheme}://{shown}:{admin.address.port}"
        self.token = admin.token
        self.context: ssl.SSLContext | None = None
        if admin.tls is not None:
            self.context = _pinned_context(admin.tls.cert)
            if cert is not None:
                self.context.load_cert_chain(cert, key)
            elif admin.tls.client_ca is not None:
                raise ReloadRefused(
                    "the admin API requires a client certificate (admin.tls.client_ca): "
                    "give --admin-cert and --admin-key"
                )

    def status(self) -> dict[str, Any]:
        request = urllib.request.Request(self.url + STATUS_PATH)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as response:
                status = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise ReloadRefused(f"cannot reach the admin API at {self.url}: {exc}") from None
        if not isinstance(status, dict) or not isinstance(status.get("reloads"), dict):
            raise ReloadRefused(f"{self.url} is not a haproxyd admin API")
        return status


def _pinned_context(cert_file: str) -> ssl.SSLContext:
    """Trust exactly the first certificate of `cert_file` (the leaf the daemon serves),
    not the CA that issued it: that CA may have issued certificates to anyone."""
    text = Path(cert_file).read_text()
    end = "-----END CERTIFICATE-----"
    leaf = text[text.find("-----BEGIN CERTIFICATE-----") : text.find(end) + len(end)]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the certificate itself is pinned
    context.load_verify_locations(cadata=leaf)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _read_pid(pid_file: str) -> int:
    try:
        text = Path(pid_file).read_text(errors="replace")
    except OSError as exc:
        raise ReloadRefused(f"pid file {pid_file}: {exc.strerror or exc}") from None
    words = text.split()
    # kill(0) signals our own process group, kill(-1) every process we may signal.
    if len(words) != 1 or not words[0].isascii() or not words[0].isdigit() or int(words[0]) < 1:
        shown = repr(text[:40]) if text.strip() else "empty"
        raise ReloadRefused(f"pid file {pid_file}: expected one process id, found {shown}")
    return int(words[0])


def _verified_pid(
    status: dict[str, Any],
    config_path: str,
    pid_file: str | None,
    listed_pid: int | None,
    url: str,
) -> int:
    """The daemon's pid, once the admin API shows it runs `config_path` and agrees with
    the pid file."""
    pid = status.get("pid")
    if not isinstance(pid, int) or pid < 1:
        raise ReloadRefused(f"the admin API at {url} gives no daemon pid")
    running = status.get("config_path")
    if not running or not _same_file(running, config_path):
        raise ReloadRefused(
            f"the daemon at {url} (pid {pid}) runs {running or 'no config file'}, not "
            f"{config_path}: nothing signalled"
        )
    if listed_pid is not None and listed_pid != pid:
        raise ReloadRefused(
            f"pid file {pid_file} names process {listed_pid}, but the daemon of "
            f"{config_path} is {pid} (a stale pid file?): nothing signalled"
        )
    return pid


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_haproxyd(pid: int) -> bool:
    """The process runs haproxyd: `[python] .../haproxyd ...` or `python -m haproxyd`
    (the program, not an argument: `vi haproxyd` is not haproxyd)."""
    try:
        argv = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return bool(argv) and Path(_program(argv)).name == "haproxyd"


def _program(argv: list[str]) -> str:
    """What a command line runs: argv[0], or for an interpreter its script or -m module
    (options before it skipped; an option's value is taken for the script, and the
    check then fails safe)."""
    if not Path(argv[0]).name.startswith("python"):
        return argv[0]
    words = iter(argv[1:])
    for word in words:
        if word == "-m":
            return next(words, "")
        if not word.startswith("-"):
            return word
    return ""


def _send_sighup(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise ReloadRefused(f"no process {pid}: nothing signalled") from None
    try:
        # Checked through the pidfd's process: a pid reused after this check is
        # another process, which pidfd_send_signal does not reach.
        if not _is_haproxyd(pid):
            raise ReloadRefused(f"process {pid} is not haproxyd: nothing signalled")
        signal.pidfd_send_signal(pidfd, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadRefused(f"process {pid} exited: nothing signalled") from None
    finally:
        os.close(pidfd)
