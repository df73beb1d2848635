"""`haproxyd reload`: signal a running daemon and report the outcome synchronously.

The daemon is found through its pid file or, without one, its admin API (`pid` in
/api/v1/ha/status); the outcome is read back from the same endpoint (`reloads`,
`last_reload`), so the operator gets exit 0 or 1 with the errors, like HAProxy's master
CLI `reload` command, instead of nginx's fire-and-forget `-s reload`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from haproxyd.config import ConfigError, load_config


def _status(url: str, token: str | None) -> dict[str, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def reload_daemon(*, config_path: str, pid_file: str | None, timeout: float) -> int:
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        print(
            "haproxyd: configuration invalid; the running daemon keeps its config", file=sys.stderr
        )
        if pid_file:
            # Still signal: the daemon rejects the file itself, and logs and counts it.
            _signal(_read_pid(pid_file))
        return 1
    admin = cfg.admin.address
    host = f"[{admin.host}]" if ":" in admin.host else admin.host
    url = f"http://{host}:{admin.port}/api/v1/ha/status"
    try:
        before = _status(url, cfg.admin.token)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"haproxyd: cannot reach the admin API at {url}: {exc}", file=sys.stderr)
        return 1
    pid = _read_pid(pid_file) if pid_file else int(before["pid"])
    done_before = sum(before["reloads"].values())
    if not _signal(pid):
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            after = _status(url, cfg.admin.token)
        except (OSError, urllib.error.URLError, ValueError):
            continue
        if sum(after["reloads"].values()) > done_before:
            last = after.get("last_reload") or {}
            if last.get("result") == "ok":
                print(f"reloaded: configuration version {after['config_version']}")
                return 0
            for line in last.get("errors", []):
                print(line, file=sys.stderr)
            print("haproxyd: reload rejected; the running config stays", file=sys.stderr)
            return 1
    print(f"haproxyd: no reload outcome within {timeout:g}s", file=sys.stderr)
    return 1


def _read_pid(pid_file: str) -> int:
    return int(Path(pid_file).read_text().split()[0])


def _signal(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"haproxyd: no process {pid}", file=sys.stderr)
        return False
    return True
