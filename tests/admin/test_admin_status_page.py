"""The status page in a real browser: headless Chromium runs the page's script against
a live admin server; the DOM it leaves shows every backend, and a backend put in maint
during the test, then one whose server is killed and marked down, turn red (checked in
the DOM and in the pixels of a screenshot saved under the test's tmp dir). Each pool's
failover decision is shown and follows the change; a standalone node says so, and a
cluster node's page shows the cluster (state, leader, term, every node).

Needs Debian's `chromium` (apt-get install -y chromium chromium-driver); skipped without.
"""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from admin_helpers import poll
from helpers.cluster import cluster_status, make_nodes, node_id, wait_for, wait_leader
from helpers.failover import CHECK, wait_decision, wait_up
from helpers.process import admin_base

pytestmark = pytest.mark.timeout(180)

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium chromium-driver)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
]


async def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile; returns stdout (the DOM for
    --dump-dom). The admin server keeps serving on this loop meanwhile."""
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode("utf-8", "replace")[-4000:]
    return out.decode("utf-8", "replace")


def rows(dom: str) -> dict[str, dict[str, str]]:
    """data-* attributes of each backend row of the dumped DOM."""
    out = {}
    for tag in re.findall(r"<tr [^>]*data-backend=[^>]*>", dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        out[attrs["data-backend"]] = attrs
    return out


def _text(markup: str) -> str:
    """The text of a piece of the DOM, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def decision(dom: str, pool: str) -> tuple[dict[str, str], str]:
    """(data-* attributes, text) of the decision line shown under `pool`'s heading."""
    found = re.search(rf'<p class="decision" data-decision-pool="{pool}"[^>]*>(.*?)</p>', dom)
    assert found, f"no decision shown for pool {pool}"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', found.group(0).split(">", 1)[0]))
    return attrs, _text(found.group(1))


def cluster_summary(dom: str) -> tuple[dict[str, str], str]:
    found = re.search(r'<p id="cluster-summary"[^>]*>(.*?)</p>', dom)
    assert found, "no cluster summary"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', found.group(0).split(">", 1)[0]))
    return attrs, _text(found.group(1))


def node_rows(dom: str) -> dict[str, tuple[dict[str, str], str]]:
    """Per node id: (data-* attributes, text of the row) of the cluster table."""
    out = {}
    for found in re.finditer(r"(<tr [^>]*data-node=[^>]*>)(.*?)</tr>", dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', found.group(1)))
        out[attrs["data-node"]] = (attrs, _text(found.group(2)))
    return out


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    pixels = []
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 255
            elif kind == 2:
                cur[i] = (cur[i] + b) & 255
            elif kind == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 255
        pixels.extend((cur[x], cur[x + 1], cur[x + 2]) for x in range(0, stride, channels))
        prev = cur
    return width, height, pixels


@needs_chromium
async def test_status_page_shows_backends_and_turns_a_dead_one_red(hap, backend, tmp_path):
    b3 = backend("web-3")
    check = {"type": "http", "path": "/healthz", "interval": "100ms", "rise": 1, "fall": 1}
    pools = {
        "web": {
            "backends": [backend("web-1").config(), backend("web-2").config(), b3.config()],
            "health_checks": [check],
        }
    }
    h = await hap(pools=pools)

    async def all_up():
        body = await h.get("/api/v1/ha/load-balancer/backends")
        return all(b["state"] == "up" for b in body["backends"])

    await poll(all_up, 10, what="every backend up")
    for _ in range(6):
        assert (await h.proxy()).status == 200
    url = h.admin_url + "/?refresh=1"
    budget = "--virtual-time-budget=4000"

    dom = await chromium(tmp_path / "profile1", budget, "--dump-dom", url)
    assert 'data-loaded="1"' in dom, dom[-3000:]
    before = rows(dom)
    assert set(before) == {"web-1", "web-2", "web-3"}
    assert all(r["data-state"] == "up" and r["data-color"] == "green" for r in before.values())
    assert "test-node" in dom and "HEALTHY" in dom
    shown, text = decision(dom, "web")
    assert shown["data-active"] == "web-1,web-2,web-3", shown
    live = (await h.get("/api/v1/ha/status"))["pools"][0]["decision"]
    assert shown["data-kind"] == live["kind"] and live["reason"] in text, (text, live)
    assert "decided by this node" in text
    summary, text = cluster_summary(dom)
    assert summary["data-cluster-mode"] == "standalone" and "standalone" in text

    # one backend put in maintenance through the API, another one's server killed (the
    # health checks mark it down)
    r = await h.api("PATCH", "/api/v1/ha/load-balancer/backends/web-2", {"state": "maint"})
    assert r.status == 200
    b3.stop()

    async def web3_down():
        return (await h.get("/api/v1/ha/load-balancer/backends/web-3"))["state"] == "down"

    await poll(web3_down, 10, what="web-3 marked down")

    dom = await chromium(tmp_path / "profile2", budget, "--dump-dom", url)
    after = rows(dom)
    assert after["web-1"]["data-state"] == "up" and after["web-1"]["data-color"] == "green"
    assert after["web-2"]["data-state"] == "maint" and after["web-2"]["data-color"] == "red"
    assert after["web-3"]["data-state"] == "down" and after["web-3"]["data-color"] == "red"
    assert "background: rgb(255, 140, 140)" in after["web-3"]["style"]
    # The decision follows: only web-1 takes traffic now, and the page says why.
    shown, text = decision(dom, "web")
    live = (await h.get("/api/v1/ha/status"))["pools"][0]["decision"]
    assert live["active"] == ["web-1"], live
    assert shown["data-active"] == "web-1" and shown["data-kind"] == live["kind"], shown
    assert live["reason"] in text, (text, live)

    shot = tmp_path / "status.png"
    await chromium(
        tmp_path / "profile3", budget, "--window-size=1400,900", f"--screenshot={shot}", url
    )
    assert shot.exists() and shot.stat().st_size > 1000
    _, _, pixels = png_pixels(shot)
    red_down = sum(1 for p in pixels if p == (255, 140, 140))
    red_maint = sum(1 for p in pixels if p == (224, 82, 82))
    green = sum(1 for p in pixels if p == (155, 224, 155))
    assert red_down > 5000 and red_maint > 5000 and green > 5000, (red_down, red_maint, green)


@needs_chromium
async def test_status_page_of_a_cluster_node_shows_the_cluster(
    backend, daemon, redis_port, tmp_path
):
    primary, standby = backend("primary"), backend("standby")
    pools = {
        "web": {
            "health_checks": [CHECK],
            "failover": {"strategy": "active_passive", "failback": "manual"},
            "backends": [primary.config(), {**standby.config(), "role": "backup"}],
        }
    }
    nodes = await asyncio.to_thread(make_nodes, daemon, redis_port, pools=pools)
    leader, term = await asyncio.to_thread(wait_leader, nodes)
    follower = next(n for n in nodes if n is not leader)
    await asyncio.to_thread(wait_up, follower, "primary", "standby")
    await asyncio.to_thread(wait_decision, follower, ["primary"])
    status = await asyncio.to_thread(
        wait_for,
        "every node up, probed, on the bootstrap config version",
        lambda: (
            (s := cluster_status(follower))
            and all(p["reachable"] for p in s["peers"])
            and {n["config_version"] for n in s["nodes"]} == {s["config_version"]} != {0}
            and len(s["nodes"]) == 3
            and s
        ),
        nodes=nodes,
    )

    url = admin_base(follower) + "/?refresh=1"
    dom = await chromium(tmp_path / "profile", "--virtual-time-budget=4000", "--dump-dom", url)
    assert 'data-loaded="1"' in dom, dom[-3000:]
    summary, text = cluster_summary(dom)
    assert summary["data-cluster-mode"] == "cluster" and summary["data-cluster-state"] == "ok"
    assert f"leader {node_id(leader)}" in text and f"term {term}" in text, text
    rows = node_rows(dom)
    assert sorted(rows) == ["node-1", "node-2", "node-3"]
    for nid, (attrs, row_text) in rows.items():
        assert attrs["data-node-state"] == "up", (nid, row_text)
        assert f"v{status['config_version']}" in row_text, (nid, row_text)
    assert "leader" in rows[node_id(leader)][1] and f"term {term}" in rows[node_id(leader)][1]
    assert "(this node)" in rows[node_id(follower)][1]
    shown, text = decision(dom, "web")
    assert shown["data-active"] == "primary", shown
    assert "the cluster leader" in text, text
