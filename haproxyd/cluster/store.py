"""The cluster's shared state in Redis: key layout, connection, and the atomic scripts.

Every key lives under one prefix (`cluster.key_prefix`, default `haproxyd`), so several
clusters can share a Redis database:

| key | type | what |
| --- | --- | --- |
| `P:nodes` | set | ids of the nodes that ever registered and did not leave |
| `P:node:<id>` | hash, TTL | one node's heartbeat record (expires: the node is lost) |
| `P:health:<id>` | hash, TTL | one node's health verdicts, `pool/backend -> up/down` |
| `P:term` | integer | the newest term; +1 with every lease granted |
| `P:leader` | string, TTL | the lease: `<node id>|<term>` |
| `P:decision:<pool>` | string | the leader's failover decision for a pool (JSON) |
| `P:config` | string | the cluster's shared config document and its version (JSON) |
| `P:events` | pub/sub | "something changed" notices (decision, config) |

Leader writes are *fenced* (Martin Kleppmann's fencing tokens): every write carries the
writer's term and the lease value it believes it holds, and a Lua script applies it
only if that term is still the newest and the lease is still that writer's. Redis runs
a script atomically, so a leader that was paused past its lease (GC, SIGSTOP) and
resumes cannot overwrite its successor's decisions: its write is refused, and the
refusal tells it to step down. The lease itself is set-if-absent with an expiry, and
renewed only by its holder (compare-and-expire in a script).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

log = logging.getLogger("haproxyd.cluster")

# KEYS: leader, term. ARGV: node id, ttl ms, newest term the node has seen.
# -> {1, value} granted | {0, current holder}. The new term exceeds both the stored one
# and the caller's: a Redis that lost its data (restarted without persistence) must
# not hand out a term that nodes have already seen.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
local term = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[3])) + 1
redis.call('SET', KEYS[2], term)
local value = ARGV[1] .. '|' .. term
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""
# KEYS: leader. ARGV: value, ttl ms. -> 1 renewed | 0 not ours any more
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: leader. ARGV: value. -> 1 released | 0 not ours
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: term, leader, target, channel. ARGV: term, lease value, payload, notice,
# expected version ('' = any). -> {1, ''} written | {0, why}
_FENCED_SET = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < newest then return {0, 'stale term ' .. ARGV[1] .. ' < ' .. newest} end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0, 'lease not held'} end
if ARGV[5] ~= '' then
  local current = redis.call('GET', KEYS[3])
  local version = 0
  if current then version = tonumber(cjson.decode(current)['version']) or 0 end
  if version ~= tonumber(ARGV[5]) then return {0, 'version ' .. version} end
end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[4])
return {1, ''}
"""


class StaleWrite(Exception):
    """Redis refused a leader write: a newer term exists, the lease is gone, or (config)
    the document changed since the writer read it. `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this node holds: the value stored in Redis and its term."""

    value: str
    term: int


def connect(url: str, *, timeout: float) -> aioredis.Redis:
    """A client for `redis://`, `rediss://`, `unix://` or
    `redis+sentinel://host:port[,host:port...]/service[/db]` (Sentinel finds the
    primary, and a failover of Redis itself is followed by redis-py)."""
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        hosts = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host.strip("[]") or "127.0.0.1", int(port or 26379)))
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs a service name: .../mymaster")
        service = unquote(path[0])
        db = int(path[1]) if len(path) > 1 else 0
        password = unquote(parts.password) if parts.password else None
        sentinel = Sentinel(
            hosts,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        return sentinel.master_for(
            service,
            db=db,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


class ClusterStore:
    """Typed access to the keys above. Every method raises `redis.RedisError` (or
    OSError) when Redis is unreachable; callers treat that as "degraded"."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}:events"
        self._k_nodes = f"{prefix}:nodes"
        self._k_term = f"{prefix}:term"
        self._k_leader = f"{prefix}:leader"
        self._k_config = f"{prefix}:config"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fenced_set = client.register_script(_FENCED_SET)

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def health_key(self, node_id: str) -> str:
        return f"{self.prefix}:health:{node_id}"

    def decision_key(self, pool: str) -> str:
        return f"{self.prefix}:decision:{pool}"

    async def close(self) -> None:
        # A Sentinel-managed client also holds connections to the Sentinels.
        manager = getattr(self.client.connection_pool, "sentinel_manager", None)
        await self.client.aclose()
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()

    # -- membership --

    async def heartbeat(
        self, node_id: str, record: dict[str, str], health: dict[str, str], ttl: float
    ) -> None:
        """Write this node's record and verdicts, both expiring after `ttl` seconds."""
        ttl_ms = max(1, int(ttl * 1000))
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(self._k_nodes, node_id)
            pipe.delete(self.node_key(node_id))
            pipe.hset(self.node_key(node_id), mapping=record)
            pipe.pexpire(self.node_key(node_id), ttl_ms)
            pipe.delete(self.health_key(node_id))
            if health:
                pipe.hset(self.health_key(node_id), mapping=health)
                pipe.pexpire(self.health_key(node_id), ttl_ms)
            await pipe.execute()

    async def leave(self, node_id: str) -> None:
        """A clean exit: the node is gone, not lost."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.srem(self._k_nodes, node_id)
            pipe.delete(self.node_key(node_id), self.health_key(node_id))
            await pipe.execute()

    async def members(self) -> tuple[dict[str, dict[str, str]], set[str]]:
        """(live records by node id, ids registered but without a record: lost)."""
        ids = sorted(await self.client.smembers(self._k_nodes))
        if not ids:
            return {}, set()
        async with self.client.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(self.node_key(node_id))
            records = await pipe.execute()
        live = {i: r for i, r in zip(ids, records, strict=True) if r}
        return live, set(ids) - set(live)

    async def health_votes(self, node_ids: list[str]) -> dict[str, dict[str, str]]:
        """Each live node's published verdicts."""
        if not node_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for node_id in node_ids:
                pipe.hgetall(self.health_key(node_id))
            votes = await pipe.execute()
        return dict(zip(node_ids, votes, strict=True))

    # -- the lease --

    async def leader(self) -> str | None:
        value: str | None = await self.client.get(self._k_leader)
        return value

    async def term(self) -> int:
        return int(await self.client.get(self._k_term) or 0)

    async def acquire(
        self, node_id: str, ttl: float, *, seen_term: int = 0
    ) -> tuple[Lease | None, str | None]:
        """Try to take the lease: (our lease, None) or (None, the current holder).
        The new term is above the stored one and above `seen_term`."""
        granted, value = await self._acquire(
            keys=[self._k_leader, self._k_term],
            args=[node_id, max(1, int(ttl * 1000)), seen_term],
        )
        if int(granted):
            return Lease(value, int(value.rpartition("|")[2])), None
        return None, value

    async def renew(self, lease: Lease, ttl: float) -> bool:
        renewed = await self._renew(
            keys=[self._k_leader], args=[lease.value, max(1, int(ttl * 1000))]
        )
        return bool(int(renewed))

    async def release(self, lease: Lease) -> None:
        await self._release(keys=[self._k_leader], args=[lease.value])

    # -- fenced leader writes --

    async def _write(
        self,
        lease: Lease,
        key: str,
        payload: dict[str, Any],
        notice: dict[str, Any],
        expected_version: int | None = None,
    ) -> None:
        ok, why = await self._fenced_set(
            keys=[self._k_term, self._k_leader, key, self.channel],
            args=[
                lease.term,
                lease.value,
                json.dumps(payload, separators=(",", ":")),
                json.dumps(notice, separators=(",", ":")),
                "" if expected_version is None else expected_version,
            ],
        )
        if not int(ok):
            raise StaleWrite(why)

    async def write_decision(self, lease: Lease, decision: dict[str, Any]) -> None:
        """Publish a failover decision (`Decision.to_dict()` plus the writer)."""
        pool = decision["pool"]
        payload = {**decision, "term": lease.term}
        notice = {"type": "decision", "pool": pool, "term": lease.term}
        await self._write(lease, self.decision_key(pool), payload, notice)

    async def decisions(self, pools: list[str]) -> dict[str, dict[str, Any]]:
        if not pools:
            return {}
        values = await self.client.mget([self.decision_key(p) for p in pools])
        out = {}
        for pool, value in zip(pools, values, strict=True):
            if value:
                out[pool] = json.loads(value)
        return out

    async def write_config(
        self,
        lease: Lease,
        version: int,
        document: dict[str, Any],
        *,
        origin: str,
        bootstrap: bool = False,
    ) -> None:
        """Store config `version`: the previous one must be `version - 1`, or, with
        `bootstrap`, Redis holds none yet (a first leader, or a Redis that lost its
        data and gets back the version the nodes run)."""
        payload = {"version": version, "term": lease.term, "origin": origin, "doc": document}
        notice = {"type": "config", "version": version}
        await self._write(
            lease, self._k_config, payload, notice, expected_version=0 if bootstrap else version - 1
        )

    async def config(self) -> dict[str, Any] | None:
        value = await self.client.get(self._k_config)
        return json.loads(value) if value else None
