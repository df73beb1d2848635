"""Issue 18's edge cases sent to haproxyd, nginx and HAProxy side by side: what the client
gets (the statuses, in order) and what the backend receives (each request line, and the
Host it carried), for the "What the proxy refuses and why" table in docs/.

Each proxy runs on an ephemeral 127.0.0.1 port in front of one raw backend (a thread
here) that logs every request it parses and answers `200` with the request line as the
body (`/204` gets a 204 with a Content-Length, `/te` a response with gzip, chunked).
Every case is one write on a fresh connection; reading stops at the close or after 2 s.
Processes are stopped by PID. Peers that are not installed are skipped.

    python3 bench/edge_peers.py [--only haproxyd,nginx,haproxy]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import socketserver
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPBACK, Procs, free_port, wait_http, which
from compare import REPO, _haproxyd_env

H = b"Host: x\r\n"
CASES: dict[str, bytes] = {
    "CL and TE": b"POST /d HTTP/1.1\r\n" + H
    + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two CL": b"POST /d HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "CL not digits": b"POST /d HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\na",
    "bad chunk size": b"POST /d HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\na\r\n0\r\n\r\n",
    "TE gzip only": b"POST /d HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\na",
    "TE chunked, gzip": b"POST /d HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked, gzip\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "obs-fold": b"GET /d HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "bare LF": b"GET /d HTTP/1.1\n" + H + b"\r\n",
    "no Host": b"GET /d HTTP/1.1\r\n\r\n",
    "two Host": b"GET /d HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "Expect: foo": b"GET /d HTTP/1.1\r\n" + H + b"Expect: foo\r\n\r\n",
    "CONNECT": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "upgrade with a body": b"POST /u HTTP/1.1\r\n" + H
    + b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\na",
    "TE in trailers": b"POST /t HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nTransfer-Encoding: x\r\n\r\n",
    "asterisk GET": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form userinfo": b"GET http://u@b.example/ HTTP/1.1\r\n" + H + b"\r\n",
    "1 upgrade then request": b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: internal.example\r\n\r\n",
    "1 h2c upgrade then request": b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
    b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: internal.example\r\n\r\n",
    "2 POST then garbage": b"POST /p HTTP/1.1\r\n" + H
    + b"Content-Length: 4\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
    "3 absolute-form": b"GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
    "4 empty Host": b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
    "4 Host a b": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "4 Host a/b": b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "4 Host port 99999": b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
    "4 #fragment": b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n",
    "4 bare CR first": b"\rGET / HTTP/1.1\r\n" + H + b"\r\n",
    "5 Connection trailer": b"POST /t HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nConnection: close\r\n\r\n",
    "5 X-Forwarded-For trailer": b"POST /t HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    "6 TE gzip, chunked": b"POST /g HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "7 /%61pi/x": b"GET /%61pi/x HTTP/1.1\r\n" + H + b"\r\n",
    "7 /x/../api/x": b"GET /x/../api/x HTTP/1.1\r\n" + H + b"\r\n",
    "9 204 with CL": b"GET /204 HTTP/1.1\r\n" + H + b"\r\n",
    "10 FROB": b"FROB / HTTP/1.1\r\n" + H + b"\r\n",
    "10 PURGE": b"PURGE / HTTP/1.1\r\n" + H + b"\r\n",
    "10 HTTP/1.2": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
}  # fmt: skip


class Backend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.log: list[str] = []


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, ValueError):
            self._serve()

    def _serve(self) -> None:
        server: Backend = self.server  # type: ignore[assignment]
        while True:
            line = self.rfile.readline()
            if not line:
                return
            headers = {}
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                while True:
                    size = int(self.rfile.readline().split(b";")[0] or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b""):
                            pass
                        break
                    self.rfile.read(size + 2)
            elif b"content-length" in headers:
                self.rfile.read(int(headers[b"content-length"]))
            request = line.strip().decode("latin-1")
            host = headers.get(b"host", b"-").decode("latin-1")
            server.log.append(f"{request} [Host: {host}]")
            if b"/204" in line:
                self.wfile.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
                continue
            body = request.encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def send(port: int, data: bytes) -> list[str]:
    """The status lines (and a 204's Content-Length) the client gets, in order."""
    out = b""
    with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + 2
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    got = []
    for part in out.split(b"HTTP/1.1 ")[1:]:
        status = part[:3].decode()
        if status == "204" and b"content-length" in part.split(b"\r\n\r\n")[0].lower():
            status += "+CL"
        got.append(status)
    return got or ["(nothing)"]


def configs(workdir: Path, name: str, port: int, backend: int) -> list[str]:
    if name == "nginx":
        (workdir / "nginx.conf").write_text(
            f"""daemon off; worker_processes 1; pid {workdir}/nginx.pid;
error_log {workdir}/nginx.err;
events {{}}
http {{
  access_log off;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream b {{ server {LOOPBACK}:{backend}; keepalive 8; }}
  server {{
    listen {LOOPBACK}:{port};
    location / {{
      proxy_pass http://b; proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
    }}
  }}
}}
"""
        )
        return [which("nginx") or "nginx", "-c", str(workdir / "nginx.conf"), "-p", str(workdir)]
    if name == "haproxy":
        (workdir / "haproxy.cfg").write_text(
            f"""global
  no strict-limits
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend f
  bind {LOOPBACK}:{port}
  default_backend b
backend b
  server s {LOOPBACK}:{backend}
"""
        )
        return [which("haproxy") or "haproxy", "-f", str(workdir / "haproxy.cfg"), "-db"]
    (workdir / "haproxyd.yaml").write_text(
        f"""listeners: [{{address: "{LOOPBACK}:{port}"}}]
admin: {{address: "{LOOPBACK}:{free_port()}"}}
pools: {{web: {{backends: [{{id: b, address: "{LOOPBACK}:{backend}"}}]}}}}
"""
    )
    return [sys.executable, "-m", "haproxyd", "-c", str(workdir / "haproxyd.yaml")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="haproxyd,nginx,haproxy")
    args = parser.parse_args()
    backend = Backend()
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    results: dict[str, dict[str, str]] = {}
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.only.split(","):
                if name != "haproxyd" and not which(name):
                    print(f"{name}: not installed, skipped")
                    continue
                workdir = Path(tmp) / name
                workdir.mkdir()
                port = free_port()
                argv = configs(workdir, name, port, backend.server_address[1])
                env = _haproxyd_env() if name == "haproxyd" else None
                proc = procs.start(name, argv, str(workdir / "log"), cwd=str(REPO), env=env)
                wait_http(port, proc)
                backend.log.clear()
                results[name] = {}
                for case, data in CASES.items():
                    backend.log.clear()
                    statuses = send(port, data)
                    time.sleep(0.05)  # a request the proxy sent but never answered
                    seen = "; ".join(backend.log) or "nothing"
                    results[name][case] = f"{' '.join(statuses)} / {seen}"
                procs.stop(proc)
    finally:
        procs.stop_all()
    backend.shutdown()
    names = list(results)
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for case in CASES:
        print(f"| {case} | " + " | ".join(results[n][case] for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
