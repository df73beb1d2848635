"""A demo backend that says who it is: for the compose stack and the Locust scenarios.

    python deploy/demo_backend.py --name backend-1 --port 8000 [--host 0.0.0.0]

Every path and method answers 200 with `hello from NAME` and the header
`X-Backend: NAME` (the stub-upstream habit of HAProxy's reg-tests: a response shows
which server took it); `GET /healthz` answers `ok` for the proxy's http checks. A
request body is read whole before the answer (at most 1 MiB, aiohttp's default), so
POSTs behave like a real application's. `--delay S` adds S seconds before each answer.

aiohttp only (already a dependency of haproxyd), so the haproxyd image can run it.
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def build_app(name: str, delay: float = 0.0) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers={"X-Backend": name})

    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        if delay > 0:
            await asyncio.sleep(delay)
        return web.Response(
            text=f"hello from {name} ({request.method} {request.path_qs}, {len(body)} bytes)\n",
            headers={"X-Backend": name},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="demo HTTP backend that names itself")
    parser.add_argument("--name", required=True, help="returned in X-Backend and the body")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    web.run_app(
        build_app(args.name, args.delay),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        reuse_address=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
