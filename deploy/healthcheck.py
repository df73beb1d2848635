"""Container health probe: is the haproxyd in this container answering its admin API?

    python deploy/healthcheck.py                      # admin address from the config file
    python deploy/healthcheck.py --require-healthy    # also fail while a pool has no backend
    python deploy/healthcheck.py --url http://127.0.0.1:8000/healthz   # any URL

The Dockerfile's HEALTHCHECK runs this (slim images have no curl). Without `--url` it
reads `admin.address` (and `admin.token`) from the config file (`--config`, else
$HAPROXYD_CONFIG, else /etc/haproxyd/haproxyd.yaml), turns a wildcard bind (0.0.0.0,
[::]) into the matching loopback address, and sends `GET /api/v1/ha/status`, with
`Authorization: Bearer $HAPROXYD_ADMIN_TOKEN` when a token is known (needed only with
`admin.read_auth`). Exit 0 on a 200 whose JSON names the node; 1 otherwise, with the
reason on stderr (Docker keeps it in `docker inspect`).

By default this is a liveness probe: a proxy whose backends are all down still does its
job (it answers 503 at once), and restarting it would not bring a backend back.
`--require-healthy` (or HAPROXYD_HEALTHCHECK_REQUIRE_HEALTHY=1) also requires the
status's `healthy: true`, for an orchestrator that should route around such a node.

Stdlib and PyYAML only, without importing haproxyd: a probe every few seconds must stay
cheap and must not depend on the daemon's own code being importable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = "/etc/haproxyd/haproxyd.yaml"
DEFAULT_ADMIN = "127.0.0.1:9901"
STATUS_PATH = "/api/v1/ha/status"
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def admin_url(address: str) -> str:
    """`host:port` or `[v6]:port` of the admin API -> the status URL to probe."""
    text = address.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid admin address {address!r}")
        host, port = text[1:end], text[end + 2 :]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid admin address {address!r}: expected host:port")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"invalid port in admin address {address!r}")
    host = _WILDCARD_TO_LOOPBACK.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{int(port)}{STATUS_PATH}"


def from_config(path: Path) -> tuple[str, str | None]:
    """(status URL, token from the file) for the config at `path`."""
    data: Any = yaml.safe_load(path.read_text())
    admin = data.get("admin") if isinstance(data, dict) else None
    admin = admin if isinstance(admin, dict) else {}
    address = admin.get("address") or DEFAULT_ADMIN
    token = admin.get("token")
    return admin_url(str(address)), (str(token) if token else None)


def probe(url: str, token: str | None, *, timeout: float, require_healthy: bool) -> str | None:
    """None when healthy, else the reason."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    if status != 200:
        return f"{url}: HTTP {status}"
    if not url.endswith(STATUS_PATH):
        return None  # --url: any 200 will do
    try:
        document = json.loads(body)
    except ValueError:
        return f"{url}: the answer is not JSON"
    if not isinstance(document, dict) or "node_id" not in document:
        return f"{url}: not a haproxyd status document"
    if require_healthy and document.get("healthy") is not True:
        unhealthy = [str(p.get("name")) for p in document.get("pools", []) if not p.get("healthy")]
        where = ", ".join(unhealthy) or "none; see node_health"
        node = document["node_id"]
        return f"node {node} reports healthy=false (pools without a backend: {where})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="health probe for a haproxyd container")
    parser.add_argument("--config", default=os.environ.get("HAPROXYD_CONFIG", DEFAULT_CONFIG))
    parser.add_argument("--url", help="probe this URL instead of the admin status endpoint")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument(
        "--require-healthy",
        action="store_true",
        default=os.environ.get("HAPROXYD_HEALTHCHECK_REQUIRE_HEALTHY", "") in ("1", "true"),
        help="also require healthy=true in the status",
    )
    args = parser.parse_args(argv)
    token = os.environ.get("HAPROXYD_ADMIN_TOKEN", "").strip() or None
    if args.url:
        url = args.url
    else:
        try:
            url, file_token = from_config(Path(args.config))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            print(f"healthcheck: cannot read {args.config}: {exc}", file=sys.stderr)
            return 1
        token = token or file_token
    reason = probe(url, token, timeout=args.timeout, require_healthy=args.require_healthy)
    if reason is not None:
        print(f"healthcheck: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
