"""Fixtures for the admin API tests: a `Daemon` in this test's event loop, real stubs.

- `hap(backends, *, pools=None, admin=None, extra=None)` -> `Harness`: builds a config
  document (listener and admin port on 127.0.0.1:0), validates it with the config
  package exactly as a file would be, starts `haproxyd.daemon.Daemon` in-process and
  returns a `Harness` with the proxy URL, the admin URL and a client session. Every
  harness is shut down at the end of the test.
- `backend(id)` (tests/conftest.py): aiohttp stubs that answer with `X-Backend: <id>`.

Helpers (`poll`, `Harness`, `make_document`) live in admin_helpers.py.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from admin_helpers import Harness, make_document


@pytest.fixture
async def hap(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    from haproxyd.config import validate_document
    from haproxyd.config.env import ENV_OVERRIDES
    from haproxyd.daemon import Daemon

    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    started: list[Harness] = []

    async def make(
        backends: list[Any] | None = None,
        *,
        pools: dict[str, Any] | None = None,
        admin: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Harness:
        doc = make_document(backends or [], pools=pools, admin=admin, extra=extra)
        cfg = validate_document(doc, source="test")
        daemon = Daemon(cfg)
        await daemon.start()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        harness = Harness(daemon, session, token=(admin or {}).get("token"))
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.close()
