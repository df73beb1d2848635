"""examples/keepalived/keepalived.conf: keepalived's own `--config-test` accepts it for
each node (when keepalived is installed; it is never started for real here: it would
add a VIP to this machine), and it agrees with docker-compose.ha.yml and the node
configs: the check asks each node's /ready on its admin port, the unicast addresses
are the nodes' fixed ones, the VIP is in their subnet, and a failing check drops a node
below every ready one."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from haproxyd.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "examples" / "keepalived" / "keepalived.conf"
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.ha.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
NODES = ["haproxyd-1", "haproxyd-2", "haproxyd-3"]
COMPOSE_ENV = {"HAPROXYD_ADMIN_TOKEN": "as-docker-compose-requires"}
KEEPALIVED = shutil.which("keepalived") or (
    "/usr/sbin/keepalived" if Path("/usr/sbin/keepalived").exists() else None
)


def lines_for(config_id: str, text: str | None = None) -> list[str]:
    """The configuration keepalived reads with `--config-id config_id`: `@id line` only
    for that id, `@^id line` for every other id, comments and blank lines dropped."""
    out = []
    for raw in (text if text is not None else CONF.read_text()).splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("@^"):
            owner, _, line = line[2:].partition(" ")
            if owner == config_id:
                continue
        elif line.startswith("@"):
            owner, _, line = line[1:].partition(" ")
            if owner != config_id:
                continue
        if line.strip():
            out.append(line.strip())
    return out


def value(lines: list[str], key: str) -> str:
    found = [line.split(None, 1)[1] for line in lines if line.split(None, 1)[0] == key]
    assert len(found) == 1, (key, found)
    return found[0]


def block(lines: list[str], name: str) -> list[str]:
    """The lines inside `name {` ... its closing `}`, nested blocks included."""
    start = lines.index(f"{name} {{") + 1
    depth = 1
    for end in range(start, len(lines)):
        depth += lines[end].endswith("{") - (lines[end] == "}")
        if depth == 0:
            return lines[start:end]
    raise AssertionError(f"{name}: no closing brace")


def node_config(node: str) -> Any:
    volume = next(
        v for v in SERVICES[node]["volumes"] if v.endswith(":/etc/haproxyd/haproxyd.yaml:ro")
    )
    return load_config(REPO / volume.split(":")[0], env=COMPOSE_ENV)


def test_each_node_has_keepalived_in_its_network_namespace() -> None:
    conf_mount = "./examples/keepalived/keepalived.conf:/etc/keepalived/keepalived.conf:ro"
    for index, node in enumerate(NODES, start=1):
        service = SERVICES[f"keepalived-{index}"]
        assert service["network_mode"] == f"service:{node}"
        assert "NET_ADMIN" in service["cap_add"]
        assert service["command"] == [node]  # the --config-id
        assert conf_mount in service["volumes"]
        assert '--config-id "$$1"' in service["entrypoint"][-2]


def test_priorities_unicast_peers_and_the_vip_match_the_compose_network() -> None:
    subnet = ipaddress.ip_network(COMPOSE["networks"]["edge"]["ipam"]["config"][0]["subnet"])
    addresses = {n: SERVICES[n]["networks"]["edge"]["ipv4_address"] for n in NODES}
    assert all(ipaddress.ip_address(a) in subnet for a in addresses.values())
    # The keepalived entrypoint finds the interface by this subnet.
    assert all(str(subnet) in SERVICES[f"keepalived-{i}"]["entrypoint"][-2] for i in (1, 2, 3))
    priorities = {}
    vips = set()
    for node in NODES:
        lines = lines_for(node)
        instance = block(lines, "vrrp_instance haproxyd_vip")
        assert value(instance, "unicast_src_ip") == addresses[node]
        peers = set(block(instance, "unicast_peer"))
        assert peers == {a for n, a in addresses.items() if n != node}
        priorities[node] = int(value(instance, "priority"))
        vips |= set(block(instance, "virtual_ipaddress"))
    assert sorted(priorities.values(), reverse=True) == [priorities[n] for n in NODES]
    (vip,) = vips
    assert ipaddress.ip_interface(vip).network == subnet
    assert vip.split("/")[0] not in addresses.values()
    # A node whose check fails drops below every ready node (the VIP moves away).
    check = block(lines_for(NODES[0]), "vrrp_script haproxyd_ready")
    drop = -int(value(check, "weight"))
    assert max(priorities.values()) - drop < min(priorities.values())
    assert max(priorities.values()) <= 254 and drop <= 254


def test_the_check_asks_each_nodes_ready_on_its_admin_port() -> None:
    check = block(lines_for(NODES[0]), "vrrp_script haproxyd_ready")
    script = value(check, "script").strip('"')
    url = re.search(r"http://127\.0\.0\.1:(\d+)/ready$", script)
    assert url and script.startswith("/usr/bin/curl -f"), script
    for node in NODES:
        assert node_config(node).admin.address.port == int(url.group(1))
    assert int(value(check, "fall")) >= 2 and int(value(check, "rise")) >= 2


def _interface() -> str | None:
    """This machine's default-route interface (keepalived refuses an unknown one)."""
    route = Path("/proc/net/route")
    if not route.exists():
        return None
    for line in route.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and fields[1] == "00000000":
            return fields[0]
    return None


def config_test(path: Path, config_id: str) -> subprocess.CompletedProcess[str]:
    assert KEEPALIVED is not None
    return subprocess.run(
        [KEEPALIVED, "--config-test", "--config-id", config_id, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # nothing it does may reach the test's process group
    )


@pytest.mark.skipif(
    KEEPALIVED is None, reason="keepalived is not installed (apt install keepalived)"
)
@pytest.mark.skipif(_interface() is None, reason="no default-route interface to check against")
def test_keepalived_config_test_accepts_it_for_every_node(tmp_path: Path) -> None:
    # As the compose entrypoint does: the node's interface in place of eth0.
    text = re.sub(r"(?m)^(\s*interface) eth0\b", rf"\1 {_interface()}", CONF.read_text())
    conf = tmp_path / "keepalived.conf"
    conf.write_text(text)
    for node in NODES:
        result = config_test(conf, node)
        assert result.returncode == 0, (node, result.returncode, result.stderr)
    # Not vacuous: a broken copy is refused.
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("172.30.23.11", "172.30.23.311"))
    result = config_test(broken, NODES[0])
    assert result.returncode != 0 and "malformed" in result.stderr, result.stderr
