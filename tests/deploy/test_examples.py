"""Every configuration the project ships passes `haproxyd check`, as an operator would
run it, and the systemd unit calls commands that exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted([*REPO.glob("examples/*.yaml"), *REPO.glob("config/*.yaml")])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_passes_check(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "haproxyd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configuration OK"


def test_there_are_configs_to_check() -> None:
    names = {p.name for p in CONFIGS}
    assert {"haproxyd.yaml", "nginx-migration.yaml"} <= names


def test_systemd_unit_uses_the_real_cli() -> None:
    unit = (REPO / "examples" / "haproxyd.service").read_text()
    lines = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert lines["ExecStart"].split()[1:3] == ["-c", "/etc/haproxyd/haproxyd.yaml"]
    assert lines["ExecReload"].split()[1] == "reload"
    assert lines["ExecStartPre"].split()[1] == "check"
    # The subcommands the unit relies on exist in the CLI.
    for command in ("check", "reload"):
        result = subprocess.run(
            [sys.executable, "-m", "haproxyd", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
