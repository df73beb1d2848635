"""`GET /ready` on the real daemon (a subprocess), as keepalived's vrrp_script and an
orchestrator's probe see it: 200 while the node serves; 503 with the reason when every
backend is down (and 200 again when one returns), while a SIGTERM drain runs, and on a
cluster node cut off from Redis while its peers carry on (fenced). Open without the
token even with `read_auth`; the Host check still applies. Every wait is a poll with a
deadline."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from typing import Any

import pytest
from helpers.cluster import make_nodes, wait_leader
from helpers.daemon import Daemon, free_port
from helpers.failover import CHECK
from helpers.http1 import wait_until
from helpers.process import wait_workers

pytestmark = pytest.mark.timeout(90)


def ready(d: Daemon, host: str | None = None) -> tuple[int, dict[str, Any]]:
    """(status, body) of GET /ready, without any token."""
    request = urllib.request.Request(f"http://{d.config['admin']['address']}/ready")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_ready_state(d: Daemon, status: int, reason: str = "", timeout: float = 15.0) -> dict:
    """Poll /ready until it answers `status` with a reason containing `reason`."""

    def probe() -> dict[str, Any] | None:
        code, body = ready(d)
        if code == status and (not reason or any(reason in r for r in body["reasons"])):
            return body
        return None

    body: dict[str, Any] = wait_until(
        probe, timeout=timeout, interval=0.05, what=f"/ready {status} {reason!r}\n{d.diag()}"
    )
    return body


def test_ready_while_serving_without_token_even_with_read_auth(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], extra={"admin": {"token": "ready-test-token", "read_auth": True}})
    status, body = ready(d)
    assert (status, body) == (200, {"ready": True, "reasons": []})
    # The rest of the admin API still wants the token for reads.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{d.config['admin']['address']}/api/v1/ha/status")
    refused.value.close()
    assert refused.value.code == 401
    # A name that is not this admin API's is still misdirected (DNS rebinding).
    assert ready(d, host="evil.example")[0] == 421


def test_ready_with_worker_processes_and_not_while_they_drain(backend, daemon):
    # The master answers for its workers: listening sockets bound and a worker serving.
    d = daemon([backend("b1")], extra={"workers": 2}, timeouts={"drain_grace": "5s"})
    wait_workers(d, 2)
    assert ready(d) == (200, {"ready": True, "reasons": []})
    conn = d.conn(timeout=10)
    try:
        assert conn.request("GET", "/").status == 200  # keeps a worker draining
        d.send_signal(signal.SIGTERM)
        wait_ready_state(d, 503, "shutting down", timeout=4.0)
    finally:
        conn.close()
    assert d.wait_exit(20) == 0, d.diag()


def test_not_ready_while_every_backend_is_down_and_ready_again_after(backend, daemon):
    b1, b2 = backend("b1"), backend("b2")
    d = daemon(pools={"web": {"health_checks": [CHECK], "backends": [b1.config(), b2.config()]}})
    wait_ready_state(d, 200)
    b1.stop()
    b2.stop()
    body = wait_ready_state(d, 503, "no selectable backend")
    assert body["ready"] is False and len(body["reasons"]) == 1
    # Nothing about the topology: no pool, backend or address in the answer.
    assert not any(word in json.dumps(body) for word in ("web", "b1", "b2", "127.0.0.1"))
    b2.start()  # same port: the health check brings it back, and the node with it
    wait_ready_state(d, 200)


def test_not_ready_while_draining_after_sigterm(backend, daemon):
    d = daemon([backend("b1")], timeouts={"shutdown": "10s", "drain_grace": "5s"})
    wait_ready_state(d, 200)
    # An idle keep-alive connection keeps the drain going for drain_grace.
    conn = d.conn(timeout=10)
    try:
        assert conn.request("GET", "/").status == 200
        d.send_signal(signal.SIGTERM)
        body = wait_ready_state(d, 503, "shutting down", timeout=4.0)
        assert any("listeners not accepting" in r for r in body["reasons"]), body
    finally:
        conn.close()
    assert d.wait_exit(15) == 0, d.diag()


def test_a_node_cut_off_from_redis_while_its_peers_lead_is_fenced(backend, daemon, redis_port):
    nodes = make_nodes(daemon, redis_port, backends=[backend("b1")], start=False)
    cut_off = nodes[2]
    # Nothing listens there: this node never reaches the cluster's Redis, the others do.
    cut_off.config["cluster"]["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    for node in nodes:
        node.spawn()
    for node in nodes:
        node.wait_ready()
    wait_leader(nodes[:2])
    body = wait_ready_state(cut_off, 503, "fenced off the cluster")
    assert body["reasons"] == [r for r in body["reasons"] if "fenced" in r], body
    for member in nodes[:2]:
        assert ready(member) == (200, {"ready": True, "reasons": []})
