"""Cluster membership, leader election and state sync through Redis (issue 8).

One `ClusterManager` per node, in the process that owns health and failover (the
master with `workers: N > 1`). Everything it does runs from one loop, once per
`cluster.heartbeat_interval`, plus a pub/sub listener:

1. **Heartbeat.** Write this node's record (id, admin address, region, health, config
   version, role, term seen) and its health verdicts, both expiring after
   `3 x heartbeat_interval`; read every member's record. A node whose record expired
   is `lost` (an event, a metric, an alert); a node that stops cleanly leaves.
2. **Lease.** Without a leader, a node that sees at least `quorum_size` live members
   takes the lease (`P:leader`, set-if-absent with `lease_ttl`), which gives it a new,
   strictly larger term; the holder renews it every beat. It *acts* as leader only while
   its renewal is fresh by its own monotonic clock (the lease minus a safety margin) and
   it sees a quorum; when either fails it steps down at once, without waiting to hear
   from Redis. A leader paused past its lease therefore stops acting the moment it runs
   again, and any write it had in flight is refused by Redis (fenced, see store.py).
3. **Decisions.** For pools whose failover strategy the leader decides (active_passive,
   multi_active, manual), the leader's machine publishes each decision (fenced); every
   node's machine runs in follower mode and routes by the published decision, so all
   nodes send a pool's traffic to the same backends. A new leader first adopts the
   published decisions, then decides from them (an active_passive pool on its backup
   stays there). active_active pools stay node-local. With
   `health_consensus: majority` the leader judges a backend down only when a majority of
   the live nodes report it down.
4. **Config sync.** The shared part of the configuration (`pools`, `routes`) is one
   versioned document in Redis. The file is the bootstrap: the first leader stores its
   own; a node that finds a newer version applies it, like a reload. A change made
   through any node's admin API (`config/update`, and adding, removing or re-weighting
   a backend, which are changes of `pools`) is sent to the leader, which validates it,
   stores version + 1 (refused if the document moved meanwhile: 409; no leader: 503) and
   applies it; the others apply it on the pub/sub notice (and, as a backstop, on the
   next beat's version check), and the node that forwarded it before answering.
5. **Redis outage.** The data plane never waits on Redis: nodes keep serving with the
   last decisions they have. The status says `degraded`; leader-only decisions pause
   (the leader's lease runs out) unless `local_fallback: true`, which lets every node
   decide for itself until Redis returns (availability over agreement). When Redis is
   back, nodes re-register, a leader is elected with a new term, and it republishes.

Peers named in `discovery_servers` (and the admin addresses in members' records) are
also probed over HTTP (`/api/v1/ha/status`), so the status can tell a peer that is down
from a Redis this node cannot reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import redis.exceptions

from haproxyd.balancer.state import BackendState
from haproxyd.cluster.peers import PROBE_TIMEOUT, fencing_reason, probe_peers
from haproxyd.cluster.store import ClusterStore, Lease, StaleWrite, connect
from haproxyd.config.secrets import redact_url
from haproxyd.failover.base import Decision
from haproxyd.tasks import cancel_and_wait

if TYPE_CHECKING:
    from haproxyd.balancer.state import Pool
    from haproxyd.config.schema import Config
    from haproxyd.failover.events import EventLog
    from haproxyd.failover.machine import FailoverMachine

log = logging.getLogger("haproxyd.cluster")

SHARED_SECTIONS = ("pools", "routes")  # what config sync shares; the rest is per node
RECORD_TTL_BEATS = 3  # a record outlives this many missed heartbeats
LEASE_SAFETY = 0.2  # act as leader only until lease_ttl x (1 - this) after a renewal
_VERDICTS = {BackendState.UP: "up", BackendState.DOWN: "down"}
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)


class ClusterHost(Protocol):
    """What the manager needs from the daemon it runs in."""

    config: Config
    config_version: int
    failover: FailoverMachine | None
    events: EventLog

    def admin_url(self) -> str: ...
    def failover_pool(self, name: str) -> Pool | None: ...
    def node_healthy(self) -> bool: ...
    def health_verdicts(self) -> dict[str, str]: ...
    async def apply_cluster_config(self, document: dict[str, Any], version: int) -> list[str]: ...


class ConfigConflict(Exception):
    """A cluster config change refused because the document moved: the change was
    based on an older version, or another change was stored meanwhile. Nothing
    changed; the admin API answers 409."""


class ClusterUnavailable(Exception):
    """A cluster config change that cannot be made now: this node is not (or no longer)
    the leader, or Redis cannot be reached. Nothing changed; the admin API answers 503
    (retry once a leader is elected)."""


def shared_document(cfg: Config) -> dict[str, Any]:
    dumped = cfg.model_dump(mode="json")
    return {section: dumped[section] for section in SHARED_SECTIONS}


class ClusterManager:
    def __init__(
        self,
        host: ClusterHost,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        cfg = host.config
        self.host = host
        self.settings = cfg.cluster
        self.node_id = cfg.node.id
        self.clock = clock
        self.wall = wall
        self.store = ClusterStore(
            connect(self.settings.redis_url, timeout=self._io_timeout()), self.settings.key_prefix
        )
        self.lease: Lease | None = None
        self._lease_deadline = 0.0  # act as leader until then (monotonic)
        self.term_seen = 0  # newest term this node has seen
        self.leader_id: str | None = None
        self.members: dict[str, dict[str, str]] = {}  # live records
        # node id -> the admin URL its record last gave: a record lives a few
        # heartbeats, a lease several times that, and a leader whose loop was held off
        # for a moment must not become unreachable to followers while it still leads.
        self._admin_urls: dict[str, str] = {}
        self.lost: dict[str, float] = {}  # lost node id -> since (wall)
        self.redis_ok: bool | None = None  # None: not tried yet
        self.redis_error = ""
        self.last_contact: float | None = None  # wall time of the last good beat
        self.has_quorum = False
        self.cluster_version = 0  # version of the shared document this node runs
        self.document: dict[str, Any] | None = None  # that document (None: none yet)
        self._config_lock = asyncio.Lock()
        self._votes: dict[str, dict[str, str]] = {}  # live node -> its verdicts (leader)
        self.stale_writes = 0  # leader writes Redis refused (fencing)
        self.probes: dict[str, bool] = {}  # peer admin address -> answered
        # peer admin address -> the cluster role its status reported (None: unknown)
        self.peer_roles: dict[str, str | None] = {}
        self._redis_lost_at: float | None = None  # monotonic; None while Redis answers
        # Why this node does not run the cluster's newest shared config (None: it does).
        self.config_error: str | None = None
        self._applied: dict[str, tuple[int, int]] = {}  # pool -> (term, version) applied
        self._pending: dict[str, Decision] = {}  # decisions waiting to be written
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._beat_now = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._stopping = False

    def _io_timeout(self) -> float:
        return max(0.05, min(1.0, self.settings.heartbeat_interval))

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Join: the first beat runs before this returns (so a node that finds a newer
        shared config applies it before serving its first decisions), then the loops
        take over. A Redis that cannot be reached is not fatal: the node serves
        standalone-like (degraded) and keeps trying."""
        machine = self.host.failover
        if machine is not None:
            machine.publish = self._publish
            if self.settings.health_consensus == "majority":
                machine.verdicts = self._consensus
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT))
        await self._beat()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._beat_forever()),
            loop.create_task(self._listen()),
            # Apart from the beat: a peer that hangs (SIGSTOP) must not delay renewals.
            loop.create_task(self._probe_forever()),
        ]

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(*self._tasks, self._writer)
        with contextlib.suppress(*_REDIS_ERRORS):
            async with asyncio.timeout(self._io_timeout() * 2):
                if self.lease is not None:
                    await self.store.release(self.lease)
                await self.store.leave(self.node_id)
        self.lease = None
        if self._http is not None:
            await self._http.close()
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.store.close()

    async def _beat_forever(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), interval)
            self._beat_now.clear()
            try:
                await self._beat()
            except Exception:  # one bad beat must not end the cluster loop
                log.exception("cluster: heartbeat failed")

    # -- role --------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Acting leader: holds the lease, renewed recently enough by our own clock,
        and sees a quorum."""
        return self.lease is not None and self.has_quorum and self.clock() < self._lease_deadline

    @property
    def role(self) -> str:
        if self.is_leader:
            return "leader"
        if self.redis_ok is False:
            return "degraded"
        return "follower" if self.leader_id else "candidate"

    def _become_leader(self, lease: Lease, renewed_at: float, decisions: dict[str, Any]) -> None:
        self.lease = lease
        self._lease_deadline = renewed_at + self.settings.lease_ttl * (1 - LEASE_SAFETY)
        self.term_seen = max(self.term_seen, lease.term)
        self.leader_id = self.node_id
        log.warning("cluster: %s is the leader (term %d)", self.node_id, lease.term)
        self.host.events.append(
            "leader", "", self.node_id, f"elected leader, term {lease.term}", strategy="cluster"
        )
        machine = self.host.failover
        if machine is None:
            return
        # Adopt what the cluster routes by now, then decide from there.
        self._follow(True)
        for data in decisions.values():
            self._apply(data)
        machine.set_follower(False)
        for name, decision in machine.decisions().items():
            if self._leader_decides(name):
                stored = decisions.get(name)
                if stored is None or stored.get("active") != list(decision.active):
                    self._publish(decision)

    def _step_down(self, reason: str) -> None:
        if self.lease is None:
            return
        lease, self.lease = self.lease, None
        self._pending.clear()
        log.warning("cluster: %s steps down (term %d): %s", self.node_id, lease.term, reason)
        self.host.events.append(
            "step_down", "", self.node_id, f"stepped down: {reason}", strategy="cluster"
        )
        self._follow(not self._local_fallback_now())
        if self.redis_ok:
            asyncio.get_running_loop().create_task(self._release(lease))

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.store.release(lease)

    def _follow(self, follower: bool) -> None:
        """Follower mode: route leader-decided pools by the leader's decisions only.
        A node follows once there is something to follow (a leader, or decisions it
        applied); before a cluster ever formed, a lone node decides for itself."""
        machine = self.host.failover
        if machine is not None:
            machine.set_follower(follower)

    def _local_fallback_now(self) -> bool:
        return self.settings.local_fallback and self.redis_ok is False

    def _leader_decides(self, pool: str) -> bool:
        machine = self.host.failover
        describe = machine.describe(pool) if machine is not None else None
        return describe is not None and describe.get("mode") != "local"

    # -- one beat ----------------------------------------------------------------------

    async def _beat(self) -> None:
        started = self.clock()
        settings = self.settings
        try:
            async with asyncio.timeout(max(settings.heartbeat_interval, self._io_timeout() * 3)):
                await self.store.heartbeat(
                    self.node_id,
                    self._record(),
                    self.host.health_verdicts(),
                    settings.heartbeat_interval * RECORD_TTL_BEATS,
                )
                live, lost = await self.store.members()
                self._set_members(live, lost)
                self.has_quorum = len(live) >= settings.quorum_size
                await self._elect(started)
                if self.is_leader and self.settings.health_consensus == "majority":
                    await self._collect_votes()
                if not self.is_leader:
                    self._follow(self.leader_id is not None or bool(self._applied))
                    await self._sync_decisions()
                await self._sync_config()
        except _REDIS_ERRORS as exc:
            self._redis_down(exc)
        else:
            if self.redis_ok is False:
                log.warning("cluster: Redis is reachable again")
            self.redis_ok = True
            self.redis_error = ""
            self.last_contact = self.wall()
            self._redis_lost_at = None
        if self.lease is not None and not self.is_leader:
            self._step_down("lease expired" if self.has_quorum else "quorum lost")

    def _record(self) -> dict[str, str]:
        return {
            "id": self.node_id,
            "admin": self.host.admin_url(),
            "region": self.host.config.node.region or "",
            "healthy": "1" if self.host.node_healthy() else "0",
            "config_version": str(self.cluster_version),
            "role": self.role,
            "term": str(self.term_seen),
            "time": f"{self.wall():.3f}",
        }

    def _set_members(self, live: dict[str, dict[str, str]], lost: set[str]) -> None:
        now = self.wall()
        for node_id in lost:
            if node_id not in self.lost:
                self.lost[node_id] = now
                if node_id in self.members:
                    log.warning("cluster: node %s lost (its heartbeat expired)", node_id)
                    self.host.events.append(
                        "node_lost", "", node_id, "heartbeat expired", strategy="cluster"
                    )
        for node_id in live:
            if self.lost.pop(node_id, None) is not None:
                log.info("cluster: node %s is back", node_id)
        for node_id in list(self.lost):
            if node_id not in lost:  # left cleanly, or came back
                del self.lost[node_id]
        self.members = live
        for node_id, record in live.items():
            if record.get("admin"):
                self._admin_urls[node_id] = record["admin"]

    async def _elect(self, started: float) -> None:
        settings = self.settings
        if self.lease is not None:
            if not self.has_quorum:
                return  # _beat steps down
            if await self.store.renew(self.lease, settings.lease_ttl):
                self._lease_deadline = started + settings.lease_ttl * (1 - LEASE_SAFETY)
            else:
                self._step_down("the lease is no longer ours")
        holder = await self.store.leader()
        if holder is None and self.has_quorum:
            decisions = await self.store.decisions(self._pool_names())
            lease, holder = await self.store.acquire(
                self.node_id, settings.lease_ttl, seen_term=self.term_seen
            )
            if lease is not None:
                self._become_leader(lease, started, decisions)
                holder = lease.value
        self.term_seen = max(self.term_seen, await self.store.term())
        self.leader_id = holder.rpartition("|")[0] if holder else None

    def _pool_names(self) -> list[str]:
        return list(self.host.config.pools)

    def _redis_down(self, exc: BaseException) -> None:
        if self.redis_ok is not False:
            log.error("cluster: Redis unreachable (%s): serving with the last known state", exc)
        self.redis_ok = False
        self.redis_error = str(exc) or type(exc).__name__
        if self._redis_lost_at is None:
            self._redis_lost_at = self.clock()
        if self._local_fallback_now():
            self._follow(False)

    # -- health consensus (leader) -----------------------------------------------------

    async def _collect_votes(self) -> None:
        votes = await self.store.health_votes(sorted(self.members))
        if votes != self._votes:
            self._votes = votes
            machine = self.host.failover
            if machine is not None:
                for name in self._pool_names():
                    if self._leader_decides(name):
                        pool = self.host.failover_pool(name)
                        if pool is not None:
                            pool.refresh()

    def _consensus(self, pool: str, backend_id: str) -> str | None:
        """`health_consensus: majority`: a backend is down for the cluster only when
        more than half of the live nodes see it down (this node's own view counts as of
        now, the others' as of their last heartbeat); None when no node has a verdict."""
        key = f"{pool}/{backend_id}"
        live = self._votes.keys() | {self.node_id}
        live_pool = self.host.failover_pool(pool)
        backend = live_pool.backends.get(backend_id) if live_pool is not None else None
        mine = _VERDICTS.get(backend.state) if backend is not None else None
        down = voted = 0
        for node_id in live:
            vote = mine if node_id == self.node_id else self._votes.get(node_id, {}).get(key)
            if vote is not None:
                voted += 1
                down += vote == "down"
        if not voted:
            return None
        return "down" if down * 2 > len(live) else "up"

    # -- decisions ---------------------------------------------------------------------

    def _publish(self, decision: Decision) -> None:
        """The machine's publisher: queue the newest decision per pool for the writer."""
        if not self.is_leader:
            return
        self._pending[decision.pool] = decision
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        while self._pending and self.lease is not None:
            pool, decision = next(iter(self._pending.items()))
            lease = self.lease
            if not self.is_leader:
                self._pending.clear()
                return
            try:
                await self.store.write_decision(lease, decision.to_dict())
            except StaleWrite as exc:
                self.stale_writes += 1
                self._step_down(f"Redis refused a decision for {pool}: {exc.reason}")
                return
            except _REDIS_ERRORS as exc:
                self._redis_down(exc)
                return  # kept pending; the next beat retries
            if self._pending.get(pool) is decision:
                del self._pending[pool]
            self._applied[pool] = (lease.term, decision.version)

    async def _sync_decisions(self) -> None:
        for data in (await self.store.decisions(self._pool_names())).values():
            self._apply(data)

    def _apply(self, data: dict[str, Any]) -> bool:
        """Route by a published decision if it is newer than the one applied here.
        Newer is (term, version): a new leader's decisions win even when its machine
        counts versions lower than ours."""
        machine = self.host.failover
        try:
            term = int(data.get("term", 0))
            decision = Decision.from_dict(data)
        except (TypeError, ValueError) as exc:
            log.error("cluster: ignoring a malformed decision: %s", exc)
            return False
        if machine is None or not machine.follower:
            return False
        if (term, decision.version) <= self._applied.get(decision.pool, (-1, -1)):
            return False
        if machine.apply_decision(decision, ordered=True):
            self._applied[decision.pool] = (term, int(data["version"]))
            self.term_seen = max(self.term_seen, term)
            return True
        return False

    async def _listen(self) -> None:
        """Pub/sub notices: apply a decision or a config the moment it is stored."""
        backoff = 0.1
        while not self._stopping:
            pubsub = self.store.client.pubsub()
            try:
                await pubsub.subscribe(self.store.channel)
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._on_notice(message.get("data"))
            except _REDIS_ERRORS:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.heartbeat_interval)
            finally:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await pubsub.aclose()

    async def _on_notice(self, raw: Any) -> None:
        try:
            notice = json.loads(raw)
        except (TypeError, ValueError):
            return
        with contextlib.suppress(*_REDIS_ERRORS):
            if notice.get("type") == "decision" and not self.is_leader:
                pool = str(notice.get("pool"))
                found = await self.store.decisions([pool])
                if pool in found:
                    self._apply(found[pool])
            elif notice.get("type") == "config":
                await self._sync_config()

    # -- config sync -------------------------------------------------------------------

    async def _sync_config(self) -> None:
        async with self._config_lock:
            stored = await self.store.config()
            if stored is None:
                if self.is_leader and self.lease is not None:
                    # The first leader stores its file's pools and routes; after Redis
                    # lost its data, the leader stores back what the nodes run.
                    document = shared_document(self.host.config)
                    version = max(1, self.cluster_version)
                    try:
                        await self.store.write_config(
                            self.lease, version, document, origin=self.node_id, bootstrap=True
                        )
                    except StaleWrite:
                        return
                    self.cluster_version, self.document = version, document
                return
            version = int(stored.get("version", 0))
            if version <= self.cluster_version:
                return
            document = stored.get("doc") or {}
            errors = await self.host.apply_cluster_config(document, version)
            if errors:
                log.error("cluster: cannot apply shared config version %d: %s", version, errors)
            self.config_error = (
                f"cannot apply the cluster's shared config version {version} (see the log)"
                if errors
                else None
            )
            # Tried once either way; a newer version will be tried again.
            self.cluster_version, self.document = version, document

    async def update_config(self, document: dict[str, Any], *, base_version: int | None) -> int:
        """Store `document` (the whole shared part, validated by the caller, who then
        applies it here) as the next version. Leader only; `base_version`, when given,
        must be the current version. Raises ConfigConflict (the document moved) or
        ClusterUnavailable (not the leader, Redis unreachable); nothing is stored then."""
        async with self._config_lock:
            lease = self.lease
            if not self.is_leader or lease is None:
                raise ClusterUnavailable("this node is not the cluster leader")
            try:
                stored = await self.store.config()
                current = int(stored.get("version", 0)) if stored else 0
                if base_version is not None and base_version != current:
                    raise ConfigConflict(
                        f"stale change: based on version {base_version}, "
                        f"the cluster is at {current}"
                    )
                await self.store.write_config(lease, current + 1, document, origin=self.node_id)
            except StaleWrite as exc:
                if exc.reason.startswith("version"):  # another change won the race
                    raise ConfigConflict(
                        f"the cluster config changed meanwhile ({exc.reason})"
                    ) from None
                self.stale_writes += 1
                self._step_down(f"Redis refused a config write: {exc.reason}")
                raise ClusterUnavailable(f"this node lost the leadership: {exc.reason}") from None
            except _REDIS_ERRORS as exc:
                self._redis_down(exc)
                raise ClusterUnavailable(f"Redis unreachable: {self.redis_error}") from None
            self.cluster_version, self.document = current + 1, document
            self.config_error = None  # the caller validated this one and applies it
            return current + 1

    async def catch_up(self) -> None:
        """Apply the cluster's stored version now if it is newer than ours, instead of
        on the pub/sub notice or the next beat: a follower whose change the leader just
        stored answers with the change applied (read your writes). Redis errors are left
        to the beat (this node then applies the version once Redis answers again)."""
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._sync_config()

    def leader_admin_url(self) -> str | None:
        """Where the leader's admin API answers: from its record, or, while its record
        has lapsed but its lease has not (the leader id is the lease's), the address
        that record last gave."""
        if self.leader_id is None:
            return None
        record = self.members.get(self.leader_id)
        if record and record.get("admin"):
            return record["admin"]
        return self._admin_urls.get(self.leader_id)

    # -- peers -------------------------------------------------------------------------

    def _peer_addresses(self) -> list[str]:
        addresses = {f"http://{a}" for a in self.settings.discovery_servers}
        for node_id, record in self.members.items():
            if node_id != self.node_id and record.get("admin"):
                addresses.add(record["admin"])
        addresses.discard(self.host.admin_url())
        return sorted(addresses)

    async def _probe_forever(self) -> None:
        while True:
            await self._probe_peers()
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _probe_peers(self) -> None:
        if self._http is None:
            return
        self.probes, self.peer_roles = await probe_peers(
            self._http, self._peer_addresses(), self.host.config.admin.token
        )

    @property
    def fenced(self) -> str | None:
        """Why the cluster goes on without this node, or None (peers.fencing_reason)."""
        if self.redis_ok is not False or self._redis_lost_at is None:
            return None
        beat = self.settings.heartbeat_interval
        return fencing_reason(
            self.clock() - self._redis_lost_at,
            record_ttl=beat * RECORD_TTL_BEATS,
            lease_ttl=self.settings.lease_ttl,
            heartbeat=beat,
            peer_roles=self.peer_roles,
        )

    # -- reading -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = []
        seen: set[str] = set()
        for node_id, record in sorted(self.members.items()):
            seen.add(node_id)
            is_self = node_id == self.node_id
            admin = record.get("admin") or None
            nodes.append(
                {
                    "id": node_id,
                    "address": admin,
                    "region": record.get("region") or None,
                    "state": "up",
                    "role": self.role if is_self else record.get("role", "follower"),
                    "self": is_self,
                    "last_seen": float(record.get("time") or 0) or None,
                    "healthy": record.get("healthy") == "1",
                    "config_version": int(record.get("config_version") or 0),
                    "term": int(record.get("term") or 0),
                    "reachable": True if is_self else self.probes.get(admin or ""),
                }
            )
        for node_id, since in sorted(self.lost.items()):
            seen.add(node_id)
            nodes.append(
                {
                    "id": node_id,
                    "address": None,
                    "region": None,
                    "state": "lost",
                    "role": "lost",
                    "self": False,
                    "last_seen": since,
                    "healthy": False,
                    "config_version": 0,
                    "term": 0,
                    "reachable": None,
                }
            )
        if self.node_id not in seen:  # Redis never heard of us (unreachable)
            nodes.insert(
                0,
                {
                    "id": self.node_id,
                    "address": self.host.admin_url(),
                    "region": self.host.config.node.region,
                    "state": "up",
                    "role": self.role,
                    "self": True,
                    "last_seen": self.wall(),
                    "healthy": self.host.node_healthy(),
                    "config_version": self.cluster_version,
                    "term": self.term_seen,
                    "reachable": True,
                },
            )
        if self.redis_ok is False:
            state = "degraded"
        elif not self.has_quorum:
            state = "no_quorum"
        else:
            state = "ok"
        return {
            "enabled": True,
            "mode": "cluster",
            "state": state,
            "node_id": self.node_id,
            "role": self.role,
            "is_leader": self.is_leader,
            "leader": self.leader_id,
            "term": self.term_seen,
            "quorum": self.settings.quorum_size,
            "has_quorum": self.has_quorum,
            "config_version": self.cluster_version,
            "redis": {
                "url": redact_url(self.settings.redis_url),
                "reachable": self.redis_ok,
                "error": self.redis_error or None,
                "last_contact": self.last_contact,
            },
            "local_fallback": self.settings.local_fallback,
            "health_consensus": self.settings.health_consensus,
            "stale_writes_refused": self.stale_writes,
            "peers": [{"address": a, "reachable": ok} for a, ok in sorted(self.probes.items())],
            "nodes": nodes,
        }
