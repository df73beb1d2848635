"""How the admin API answers an error: `{"error": ..., "details": [...]}` with a 4xx
(SPEC §4), whatever refused the request (a handler's `APIError`, aiohttp's 404/405/413,
a guard of `security.py`); a 500 (an exception no handler expected) is logged and means
a bug.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

log = logging.getLogger("haproxyd.admin")


class APIError(Exception):
    """Raised by a handler to refuse a request; nothing was changed."""

    def __init__(
        self,
        status: int,
        error: str,
        details: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or []
        self.extra = extra or {}  # more fields of the body (`forwarded_to`)


def error_response(
    status: int,
    error: str,
    details: list[str] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": error, "details": details or [], **(extra or {})}, status=status, headers=headers
    )


def pydantic_details(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        out.append(f"{where}: {err.get('msg', 'invalid')}")
    return out


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.error, exc.details, extra=exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {}
        if exc.status == 405 and "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        reason = exc.reason.lower() if exc.reason else "error"
        details = [exc.text] if exc.text and exc.text != f"{exc.status}: {exc.reason}" else []
        return error_response(exc.status, reason, details, headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error_response(500, "internal error", ["see the daemon's log"])
