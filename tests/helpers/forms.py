"""Both forms of the data plane in one run, for the in-process unit tests.

The daemon tests run the interpreted form in their subprocesses (HAPROXYD_PURE_PYTHON=1).
The unit tests of `IN_PROCESS` import the data plane into the test process itself, and
an interpreter imports a module once: the compiled `haproxyd.balancer.state` and its
interpreted twin cannot both be that module, nor can every module built on it (the
algorithms, the pool, the tests' helpers) exist twice. So their `[interpreted]` items
run in one child pytest under HAPROXYD_PURE_PYTHON=1, started when the collection is
done and running beside the parent's `[compiled]` items (moved last in the parent, so
that the child has usually finished when they are reached). Each `[interpreted]` item
in the parent then reports the child's outcome for it: passed, failed with the child's
traceback, or skipped with the child's reason; one the child did not report fails.

A module that tests what exists only compiled sets `FORMS = ("compiled",)`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
# tests/<these>: unit tests that import the data plane
IN_PROCESS = ("balancer", "proxy", "tracing")
BOTH = ("compiled", "interpreted")
CHILD_ENV = "HAPROXYD_TEST_INTERPRETED_CHILD"  # in the child: its work directory
IS_CHILD = CHILD_ENV in os.environ
# The child runs beside the whole parent run; a delegated item waits for it this long.
CHILD_CEILING = 900.0
_DELEGATED = "_haproxyd_interpreted_child"


def in_process(path: Path) -> bool:
    try:
        return path.resolve().relative_to(TESTS).parts[0] in IN_PROCESS
    except ValueError:
        return False


def in_process_forms(metafunc: pytest.Metafunc, installed: str) -> list[str] | None:
    """The forms an in-process test of `metafunc` runs in; None: only the installed one."""
    if not in_process(metafunc.definition.path):
        return None
    if IS_CHILD:
        return ["interpreted"]  # the parent's `[interpreted]` items, with their ids
    if installed != "compiled":
        return None
    return list(getattr(metafunc.module, "FORMS", BOTH))


class InterpretedChild:
    """The child pytest that runs the `[interpreted]` items of the parent.

    Under pytest-xdist every worker collects the same items and runs a share of them:
    one child serves the whole run. The worker `gw0` (or a run without xdist) starts it;
    every process reads its outcomes from the same directory, named by the run."""

    def __init__(self, items: list[pytest.Item], workdir: Path, *, start: bool) -> None:
        self.workdir = workdir
        self.output = workdir / "output.txt"
        self.exited = workdir / "exited"  # written when the child is over, however it ended
        self.results: dict[str, dict[str, str]] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if not start:
            return
        (workdir / "nodeids.json").write_text(json.dumps([item.nodeid for item in items]))
        files = sorted({str(item.path) for item in items})
        env = {**os.environ, "HAPROXYD_PURE_PYTHON": "1", CHILD_ENV: str(workdir)}
        env.pop("HAPROXYD_REQUIRE_COMPILED", None)  # the parent's check; the child is not
        for name in [k for k in env if k.startswith("PYTEST_XDIST") or k == "PYTEST_CURRENT_TEST"]:
            env.pop(name)
        # One process: the run's addopts (its xdist workers) are the parent's business.
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-o", "addopts=", "-p", "no:xdist", *files]
        # The shell writes `exited` after pytest, so that a worker that did not start
        # the child sees it end even if it crashed before writing its results.
        script = '"$@"; echo $? > "$0.tmp" && mv "$0.tmp" "$0"'
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                ["sh", "-c", script, str(self.exited), *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=TESTS.parent,
                start_new_session=True,
            )

    def wait(self) -> None:
        """Until the child is over (bounded by the ceiling; past it, it is stopped)."""
        deadline = time.monotonic() + CHILD_CEILING
        # The shell writes `exited` as its last act, so that file is the one signal,
        # whichever worker started the child (the starter also stops looking if its
        # shell is gone without writing it).
        while not self.exited.exists():
            gone = self.proc is not None and self.proc.poll() is not None
            if gone or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not self.exited.exists():
            self.stop()

    def result(self, nodeid: str) -> dict[str, str]:
        if self.results is None:
            self.wait()
            path = self.workdir / "results.json"
            self.results = json.loads(path.read_text()) if path.exists() else {}
        found = self.results.get(nodeid)
        if found is None:
            tail = self.output.read_text(errors="replace")[-4000:] if self.output.exists() else ""
            return {"outcome": "failed", "text": f"the interpreted run did not report it:\n{tail}"}
        return found

    def finish(self) -> None:
        """The starter's end of session: other workers may still need the child."""
        if self.proc is not None and self.proc.poll() is None:
            self.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def shared_workdir(config: pytest.Config) -> tuple[Path, bool]:
    """The child's directory for this run, and whether this process starts the child."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # no xdist: this process is the whole run
        return Path(config._tmp_path_factory.mktemp("interpreted")), True  # type: ignore[attr-defined]
    workdir = Path(tempfile.gettempdir()) / f"haproxyd-interpreted-{workerinput['testrunuid']}"
    workdir.mkdir(exist_ok=True)
    return workdir, workerinput["workerid"] == "gw0"


def delegate(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Parent, after collection: move the `[interpreted]` in-process items last, start
    the child for them, and have each report the child's outcome."""
    delegated = [
        item
        for item in items
        if in_process(item.path)
        and getattr(getattr(item, "callspec", None), "params", {}).get("form") == "interpreted"
    ]
    if not delegated:
        return
    chosen = set(map(id, delegated))
    items[:] = [item for item in items if id(item) not in chosen] + delegated
    workdir, start = shared_workdir(config)
    child = InterpretedChild(delegated, workdir, start=start)
    if start:
        config.add_cleanup(child.stop)
        config.add_cleanup(child.finish)  # cleanups run last first: finish, then stop
    for item in delegated:
        item.add_marker(pytest.mark.timeout(CHILD_CEILING + 60))
        setattr(item, _DELEGATED, child)


def run_delegated(item: pytest.Item) -> bool:
    """Parent, in place of running the test: the child's outcome. False: not delegated."""
    child: InterpretedChild | None = getattr(item, _DELEGATED, None)
    if child is None:
        return False
    found = child.result(item.nodeid)
    if found["outcome"] == "failed":
        pytest.fail(f"[interpreted, in the child pytest]\n{found['text']}", pytrace=False)
    if found["outcome"] == "skipped":
        pytest.skip(found["text"])
    return True


class ChildReporter:
    """Child: runs only the parent's `[interpreted]` items, and writes each outcome."""

    def __init__(self) -> None:
        self.workdir = Path(os.environ[CHILD_ENV])
        self.wanted = set(json.loads((self.workdir / "nodeids.json").read_text()))
        self.results: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        deselected = [item for item in items if item.nodeid not in self.wanted]
        items[:] = [item for item in items if item.nodeid in self.wanted]
        config.hook.pytest_deselected(items=deselected)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        known = self.results.get(report.nodeid, {"outcome": "passed", "text": ""})
        if report.failed:
            known = {"outcome": "failed", "text": f"({report.when}) {report.longreprtext}"}
        elif report.skipped and known["outcome"] == "passed":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            known = {"outcome": "skipped", "text": str(reason)}
        self.results[report.nodeid] = known

    def pytest_sessionfinish(self) -> None:
        path = self.workdir / "results.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.results))
        path.with_suffix(".tmp").rename(path)
