"""`redis` check: redis-py asyncio `PING`, and `INFO replication` for `expect_role`.

HAProxy's `option redis-check` sends PING; its documented recipe for following the
primary adds `tcp-check expect string role:master` on `INFO replication`, which is what
`expect_role: master` does. Each probe opens one fresh connection (so it also proves
the server accepts connections) and closes it. Cost: one connect and one or two
round trips.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from haproxyd.health.base import Check, CheckResult, clip, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import RedisCheck as RedisCheckConfig


@register
class RedisCheck(Check):
    type = "redis"

    def __init__(self, config: RedisCheckConfig) -> None:
        super().__init__(config)
        self.port = config.port
        self.password = config.password
        self.db = config.db
        self.expect_role = config.expect_role

    def describe(self) -> str:
        return f"redis role={self.expect_role}" if self.expect_role else "redis PING"

    async def probe(self, backend: Backend | None) -> CheckResult:
        if backend is None:
            return CheckResult(False, "redis check needs a backend")
        host, port = self.target(backend)
        start = time.perf_counter()
        client = aioredis.Redis(
            host=host,
            port=port,
            password=self.password,
            db=self.db,
            single_connection_client=True,
            # RESP2: no HELLO, so servers older than Redis 6 answer too, and a missing
            # password reads "NOAUTH Authentication required".
            protocol=2,
            # One attempt: the scheduler's rise/fall is the retry policy.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            pong = await client.ping()
            if not pong:
                return CheckResult(False, "PING got no PONG", time.perf_counter() - start)
            if self.expect_role is None:
                return CheckResult(True, "PONG", time.perf_counter() - start)
            info = await client.info("replication")
        except RedisError as exc:
            return CheckResult(False, f"redis: {clip(str(exc))}", time.perf_counter() - start)
        except OSError as exc:
            return CheckResult(False, f"redis: {exc.strerror or exc}", time.perf_counter() - start)
        finally:
            await client.aclose()
        latency = time.perf_counter() - start
        role = info.get("role")
        if role != self.expect_role:
            return CheckResult(False, f"role is {role}, expected {self.expect_role}", latency)
        return CheckResult(True, f"PONG, role {role}", latency)
