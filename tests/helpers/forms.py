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
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
IN_PROCESS = ("balancer", "proxy")  # tests/<these>: unit tests that import the data plane
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
    """The child pytest that runs the `[interpreted]` items of the parent."""

    def __init__(self, items: list[pytest.Item], workdir: Path) -> None:
        self.workdir = workdir
        self.output = workdir / "output.txt"
        self.results: dict[str, dict[str, str]] | None = None
        (workdir / "nodeids.json").write_text(json.dumps([item.nodeid for item in items]))
        files = sorted({str(item.path) for item in items})
        env = {**os.environ, "HAPROXYD_PURE_PYTHON": "1", CHILD_ENV: str(workdir)}
        env.pop("HAPROXYD_REQUIRE_COMPILED", None)  # the parent's check; the child is not
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=TESTS.parent,
            )

    def result(self, nodeid: str) -> dict[str, str]:
        if self.results is None:
            try:
                self.proc.wait(CHILD_CEILING)
            except subprocess.TimeoutExpired:
                self.stop()
            path = self.workdir / "results.json"
            self.results = json.loads(path.read_text()) if path.exists() else {}
        found = self.results.get(nodeid)
        if found is None:
            tail = self.output.read_text(errors="replace")[-4000:]
            return {"outcome": "failed", "text": f"the interpreted run did not report it:\n{tail}"}
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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
    workdir = Path(config._tmp_path_factory.mktemp("interpreted"))  # type: ignore[attr-defined]
    child = InterpretedChild(delegated, workdir)
    config.add_cleanup(child.stop)
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
