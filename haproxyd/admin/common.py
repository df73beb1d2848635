"""What every admin handler module shares: the app's keys, reading a request (a JSON
object, a bounded query number) and finding what a path names (404 otherwise)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from haproxyd.admin.errors import APIError
from haproxyd.admin.state import AdminState
from haproxyd.balancer.state import Backend

API = "/api/v1/ha"
STATE_KEY = web.AppKey("state", AdminState)


def request_state(request: web.Request) -> AdminState:
    return request.app[STATE_KEY]


async def json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise APIError(400, "empty body", ["send a JSON object"])
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise APIError(400, "invalid JSON", [str(exc)[:200]]) from None
    if not isinstance(data, dict):
        raise APIError(400, "invalid body", ["the body must be a JSON object"])
    return data


def query_number(
    request: web.Request, name: str, default: float, low: float, high: float, *, integer: bool
) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise APIError(400, f"invalid {name}", [f"{name} must be {kind}"]) from None
    if not low <= value <= high or value != value:
        raise APIError(400, f"invalid {name}", [f"{name} must be between {low:g} and {high:g}"])
    return value


def pool_or_404(state: AdminState, name: str) -> Any:
    pool = state.find_pool(name)
    if pool is None:
        raise APIError(404, "no such pool", [f"no pool named {name!r}"])
    return pool


def backend_or_404(state: AdminState, backend_id: str) -> tuple[Any, Backend]:
    found = state.find_backend(backend_id)
    if found is None:
        raise APIError(404, "no such backend", [f"no backend with id {backend_id!r}"])
    return found
