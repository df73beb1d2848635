"""Helpers of the admin tests (imported by name, like `health_helpers`): a config
document builder, the `Harness` around an in-process daemon, and `poll`.

Waiting is always `poll(condition, timeout)`: check, yield to the loop, check again,
until a deadline; never a sleep that hopes the work is done.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

DEFAULT_TIMEOUTS = {
    "connect": "1s",
    "response": "10s",
    "idle": "10s",
    "client_header": "2s",
    "shutdown": "2s",
}


async def poll(
    condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Call `condition` (sync or async) until it returns something truthy; return it.
    Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any  # parsed JSON, or text

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


@dataclass
class Harness:
    daemon: Any
    session: aiohttp.ClientSession
    token: str | None = None
    extra_sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return self.daemon.admin.url

    @property
    def proxy_url(self) -> str:
        return "http://" + self.daemon.listen_addresses()[0]

    async def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | str | None = None,
        token: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An admin call. `token=True` sends the harness token (if any), a string sends
        that token, None/False sends none."""
        hdrs = dict(headers or {})
        tok = self.token if token is True else (token or None)
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        async with self.session.request(
            method, self.admin_url + path, json=json, data=data, headers=hdrs
        ) as resp:
            text = await resp.text()
            body: Any = text
            if resp.content_type == "application/json":
                body = await resp.json()
            return Reply(resp.status, resp.headers, body)

    async def get(self, path: str) -> Any:
        reply = await self.api("GET", path)
        assert reply.status == 200, reply
        return reply.body

    async def proxy(self, path: str = "/echo", method: str = "GET") -> Reply:
        """A request through the proxy on a fresh connection; body = X-Backend."""
        async with self.session.request(
            method, self.proxy_url + path, headers={"Connection": "close"}
        ) as resp:
            await resp.read()
            return Reply(resp.status, resp.headers, resp.headers.get("X-Backend"))

    def backend(self, backend_id: str) -> Any:
        found = self.daemon.runtime.find_backend(backend_id)
        assert found is not None, f"no backend {backend_id}"
        return found[1]

    async def close(self) -> None:
        await self.daemon.shutdown()
        await self.session.close()
        for s in self.extra_sessions:
            await s.close()


def make_document(
    backends: list[Any],
    *,
    pools: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    entries = [b if isinstance(b, dict) else b.config() for b in backends]
    if pools is None:
        pools = {"web": {"backends": entries, "retries": {"attempts": 0}}}
    doc: dict[str, Any] = {
        "node": {"id": "test-node"},
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0", **(admin or {})},
        "timeouts": dict(DEFAULT_TIMEOUTS),
        "pools": pools,
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = copy.deepcopy(value)
    return doc
