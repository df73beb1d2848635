"""`.ci/run` runs exactly the README's test command, and the README's two commands make
and use a virtualenv (a distribution's Python refuses `pip install` outside one)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _readme_commands() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    # "Run the demo ...:" / "Run the tests ...:", its paragraph, then the indented command.
    commands = re.findall(
        r"^Run the (demo|tests)\b[^\n]*\n(?:[^\n]+\n)*\n    ([^\n]+)$", section, re.M
    )
    return dict(commands)


def test_the_readme_commands_use_a_virtualenv() -> None:
    commands = _readme_commands()
    assert set(commands) == {"demo", "tests"}
    for command in commands.values():
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e "), command
        assert "python3 -m pip" not in command


def test_ci_runs_exactly_the_readme_test_command() -> None:
    script = (REPO / ".ci" / "run").read_text()
    assert _readme_commands()["tests"] in script
    subprocess.run(["bash", "-n", str(REPO / ".ci" / "run")], check=True)
