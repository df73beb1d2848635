"""Steady mixed traffic through a proxy, for Locust (FastHttpUser).

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s \
        --host http://127.0.0.1:8080 --csv out

Any proxy URL works (haproxyd, nginx, haproxy); a loopback one is what this project
uses (bench/compare.py --serve PEER starts a backend and one proxy to aim at). The mix,
per user: mostly GETs of a few paths, some small POSTs, an occasional GET with a query
string. Tunables (environment):

  BENCH_GET_PATHS   comma list of GET paths (default "/,/api/items,/api/items/42,/healthz")
  BENCH_POST_PATH   path for the POSTs (default "/api/items")
  BENCH_RPS         requests per second per user, steady pacing; 0 = as fast as possible
                    (default 10: 50 users -> ~500 req/s)
  BENCH_OK          comma list of statuses that count as success (default "200,201,204")

A response is a failure when its status is not in BENCH_OK; the proxy's own errors
(502/503/504) therefore show up in Locust's failure table with their status.
"""

from __future__ import annotations

import json
import os
import random

from locust import constant, constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

GET_PATHS = [
    p.strip()
    for p in os.environ.get("BENCH_GET_PATHS", "/,/api/items,/api/items/42,/healthz").split(",")
    if p.strip()
] or ["/"]
POST_PATH = os.environ.get("BENCH_POST_PATH", "/api/items")
RPS = float(os.environ.get("BENCH_RPS", "10"))
OK = {int(s) for s in os.environ.get("BENCH_OK", "200,201,204").split(",") if s.strip()}


class ProxyUser(FastHttpUser):
    """One keep-alive client connection sending a steady mix of requests."""

    wait_time = constant_throughput(RPS) if RPS > 0 else constant(0)
    # FastHttpUser keeps its connection alive between requests, like a browser or an SDK
    network_timeout = 10.0
    connection_timeout = 5.0

    def _check(self, resp) -> None:
        if resp.status_code in OK:
            resp.success()
        else:
            resp.failure(f"status {resp.status_code}")

    @task(10)
    def get_path(self) -> None:
        path = random.choice(GET_PATHS)
        with self.client.get(path, name=f"GET {path}", catch_response=True) as resp:
            self._check(resp)

    @task(2)
    def get_with_query(self) -> None:
        path = random.choice(GET_PATHS)
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}page={random.randint(1, 100)}&q=bench"
        with self.client.get(url, name=f"GET {path}?…", catch_response=True) as resp:
            self._check(resp)

    @task(3)
    def post_small(self) -> None:
        body = json.dumps(
            {"id": random.randint(1, 10**6), "name": "bench", "tags": ["a", "b"], "n": 1}
        )
        with self.client.post(
            POST_PATH,
            data=body,
            headers={"Content-Type": "application/json"},
            name=f"POST {POST_PATH}",
            catch_response=True,
        ) as resp:
            self._check(resp)
