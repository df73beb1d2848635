"""Shared fixtures: stub backends, the daemon as a subprocess, TLS certificates.

Fixture API (all function-scoped unless said):

- `unused_port()` -> int: a free TCP port on 127.0.0.1 (bind to 0, release).
- `backend_loop` (session): the background event loop the stub backends run on.
- `backend(backend_id=None)` -> `Backend`: a started aiohttp backend answering with
  `X-Backend: <id>` and recording every request (see helpers/backends.py for routes).
- `raw_backend(handler, backend_id=None)` -> `RawBackend`: a started bare asyncio
  backend; `handler(Recorded) -> bytes | RawReply` decides the bytes sent back.
- `daemon(backends=..., pools=None, timeouts=None, limits=None, tls=None, extra=None,
  start=True)` -> `Daemon`: writes the YAML into `tmp_path`, starts
  `python -m haproxyd -c FILE` and waits until the listener accepts. In the
  `test_dataplane_*` modules every such test runs twice when the data plane is
  installed compiled: once compiled, once interpreted (`form`, HAPROXYD_PURE_PYTHON).
  So do the in-process tests of tests/balancer, tests/proxy and tests/tracing
  (helpers/forms.py).
  `backends` takes Backend/RawBackend objects or `{id, address}` dicts.
- `grpc_backend(backend_id=None, tls=None, with_health=True)` -> `GrpcBackend`
  (helpers/grpc_backend.py): a started grpcio server with the standard health service,
  whose status the test flips, and the `test.Echo` service (unary, streaming both ways).
- `tls_files` (session) -> `TLSFiles(ca, cert, key, client_context)` made by trustme.
- `redis_procs` -> `RedisProcesses` (helpers/redis_server.py): redis-servers for this
  test, each on its own port, killable and restartable on it; `redis_port` -> the port
  of one started on it (the cluster tests' Redis). Skipped without `redis-server`.

Raw-socket client: `helpers.http1` (`Conn`, `build_request`, `chunked`, `wait_until`).

Daemons are stopped (SIGTERM, then SIGKILL) and backends closed after each test; when a
test fails, each daemon's stderr is attached to the report.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import forms
from helpers.backends import Backend, BackendLoop, RawBackend, RawHandler
from helpers.daemon import (
    DAEMONS_ATTR,
    INSTALLED_FORM,
    Daemon,
    attach_daemon,
    free_port,
    free_ports,
    make_config,
)
from helpers.redis_server import RedisProcesses

from haproxyd._build import stale_builds


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.failed:
        for daemon in getattr(item, DAEMONS_ATTR, []):
            text = daemon.stderr_text()[-8000:] or "(empty)"
            report.sections.append((f"haproxyd {daemon.name} stderr ({report.when})", text))
    return report


@pytest.fixture
def unused_port() -> Callable[[], int]:
    return free_port


@pytest.fixture(scope="session")
def backend_loop() -> Iterator[BackendLoop]:
    loop = BackendLoop()
    yield loop
    loop.close()


@pytest.fixture
def backend(backend_loop: BackendLoop) -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(backend_id: str | None = None) -> Backend:
        b = Backend(backend_loop, backend_id or f"b{len(started) + 1}").start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def raw_backend(backend_loop: BackendLoop) -> Iterator[Callable[..., RawBackend]]:
    started: list[RawBackend] = []

    def make(handler: RawHandler, backend_id: str | None = None) -> RawBackend:
        b = RawBackend(backend_loop, backend_id or f"raw{len(started) + 1}", handler).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def grpc_backend() -> Iterator[Callable[..., Any]]:
    # Imported here: grpcio starts threads, and only the tests that ask for it need them.
    from helpers.grpc_backend import GrpcBackend

    started: list[GrpcBackend] = []

    def make(
        backend_id: str | None = None,
        *,
        tls: tuple[bytes, bytes] | None = None,
        with_health: bool = True,
    ) -> GrpcBackend:
        b = GrpcBackend(backend_id or f"g{len(started) + 1}", tls=tls, with_health=with_health)
        started.append(b.start())
        return b

    yield make
    for b in started:
        b.stop()


def backend_entries(backends: list[Any]) -> list[dict[str, Any]]:
    return [b if isinstance(b, dict) else b.config() for b in backends]


def pytest_configure(config: pytest.Config) -> None:
    if forms.IS_CHILD:
        config.pluginmanager.register(forms.ChildReporter(), "haproxyd-interpreted-child")


def pytest_report_header(config: pytest.Config) -> str:
    if INSTALLED_FORM == "compiled":
        return "haproxyd data plane: compiled; the data-plane tests run in both forms"
    return (
        "haproxyd data plane: INTERPRETED (not compiled here): the data-plane tests run "
        "in this form only, and the scanner's tests (compiled only) skip"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_builds()
    if stale:
        raise pytest.UsageError(
            f"{', '.join(stale)}: the compiled module is older than its source; "
            "rebuild it with `.venv/bin/pip install -e .` (or set HAPROXYD_PURE_PYTHON=1)"
        )
    if os.environ.get("HAPROXYD_REQUIRE_COMPILED") == "1" and INSTALLED_FORM != "compiled":
        # CI's main run: a build that fell back must not pass as a run of both forms.
        raise pytest.UsageError("HAPROXYD_REQUIRE_COMPILED=1 but the data plane is interpreted")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The data plane's tests run against both of its forms when the installed one is
    # compiled: the interpreted one is what runs where no compiler was found. The
    # daemon tests start each form as a process; the in-process ones: helpers/forms.py.
    module = metafunc.module.__name__.rpartition(".")[2]
    if (
        INSTALLED_FORM == "compiled"
        and module.startswith("test_dataplane_")
        and "daemon" in metafunc.fixturenames
    ):
        metafunc.parametrize("form", list(forms.BOTH), indirect=True)
        return
    in_process = forms.in_process_forms(metafunc, INSTALLED_FORM)
    if in_process is not None:
        metafunc.parametrize("form", in_process, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not forms.IS_CHILD:
        forms.delegate(config, items)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    return True if forms.run_delegated(pyfuncitem) else None


@pytest.fixture(autouse=True)
def form(request: pytest.FixtureRequest) -> str:
    """The data plane's form this test runs (its processes, or, in-process, this one)."""
    return getattr(request, "param", INSTALLED_FORM)


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest, tmp_path: Path, form: str
) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []
    env = {"HAPROXYD_PURE_PYTHON": "1"} if form == "interpreted" else {}

    def make(
        backends: list[Any] | None = None,
        *,
        pools: dict[str, Any] | None = None,
        timeouts: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        tls: tuple[Path, Path] | None = None,
        extra: dict[str, Any] | None = None,
        start: bool = True,
    ) -> Daemon:
        workdir = tmp_path / f"haproxyd{len(started) + 1}"
        workdir.mkdir()
        port, admin_port = free_ports(2)
        config = make_config(
            port=port,
            admin_port=admin_port,
            workdir=workdir,
            backends=backend_entries(backends or []),
            pools=pools,
            timeouts=timeouts,
            limits=limits,
            tls=tls,
            extra=extra,
        )
        d = Daemon(config, workdir, name=f"haproxyd{len(started) + 1}", env=env)
        d.free_picks = (
            config["listeners"][0]["address"] == f"127.0.0.1:{port}"
            and config["admin"]["address"] == f"127.0.0.1:{admin_port}"
        )
        started.append(d)
        attach_daemon(request.node, d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        d.stop()


@dataclass
class TLSFiles:
    ca: Any
    cert: Path
    key: Path
    client_context: ssl.SSLContext


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    cert = folder / "server.pem"
    key = folder / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return TLSFiles(ca=ca, cert=cert, key=key, client_context=context)


@pytest.fixture
def redis_procs(tmp_path: Path) -> Iterator[RedisProcesses]:
    procs = RedisProcesses(tmp_path)
    yield procs
    procs.stop()


@pytest.fixture
def redis_port(redis_procs: RedisProcesses) -> int:
    return redis_procs.spawn("cluster")
