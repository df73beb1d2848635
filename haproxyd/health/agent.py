"""`system_metrics` check: HAProxy's agent check on a backend, local load on the node.

Against a backend it speaks HAProxy's agent protocol (`agent-check`, documented in the
HAProxy configuration manual, section 5.2): connect to the agent port, optionally send
`send`, read one line of words separated by spaces, tabs or commas:

  `75%`                    effective weight = 75% of the configured weight
  `up`                     the check passes
  `down`/`fail`/`stopped`  the check fails (`#text` after the word gives the reason)
  `drain`/`maint`/`ready`  administrative requests, applied by the scheduler
  `maxconn:N`              accepted and ignored

An extension to that line: `cpu:N` (percent) and `load1:N`, judged against the check's
`max_cpu_percent`/`max_load1` when they are set. Unlike HAProxy, an agent that cannot be
reached fails the check (here the agent may be a pool's only check).

As a node check (no backend) it reads the proxy host's CPU percent (psutil, since the
previous probe) and 1-minute load average. Cost: one short connection, one line parsed.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import TYPE_CHECKING, Any

import psutil

from haproxyd.health.base import Check, CheckResult, clip, close_writer, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import SystemMetricsCheck as AgentCheckConfig

MAX_LINE = 1024
_SEPARATORS = re.compile(r"[\s,]+")
_DOWN_WORDS = frozenset({"down", "fail", "failed", "stopped"})
_ADMIN_WORDS = frozenset({"drain", "maint", "ready"})


def parse_agent_reply(line: str) -> dict[str, Any]:
    """Words of one agent line -> {"status": "up"|"down"|None, "reason": str|None,
    "weight_percent": int|None, "admin_state": str|None, "cpu": float|None,
    "load1": float|None, "unknown": [words]}."""
    text, _, description = line.strip().partition("#")
    parsed: dict[str, Any] = {
        "status": None,
        "reason": description.strip() or None,
        "weight_percent": None,
        "admin_state": None,
        "cpu": None,
        "load1": None,
        "unknown": [],
    }
    for word in _SEPARATORS.split(text.strip()):
        lower = word.lower()
        if not lower:
            continue
        if lower.endswith("%") and lower[:-1].isdigit():
            parsed["weight_percent"] = int(lower[:-1])
        elif lower == "up":
            parsed["status"] = "up"
        elif lower in _DOWN_WORDS:
            parsed["status"] = "down"
        elif lower in _ADMIN_WORDS:
            parsed["admin_state"] = lower
        elif lower.startswith("maxconn:"):
            pass
        elif lower.startswith(("cpu:", "load1:")):
            key, _, value = lower.partition(":")
            try:
                parsed[key] = float(value.rstrip("%"))
            except ValueError:
                parsed["unknown"].append(word)
        else:
            parsed["unknown"].append(word)
    return parsed


def read_node_metrics() -> dict[str, float]:
    """CPU percent since the previous call and the 1-minute load of this host."""
    return {"cpu": psutil.cpu_percent(interval=None), "load1": os.getloadavg()[0]}


@register
class SystemMetricsCheck(Check):
    type = "system_metrics"
    node_capable = True

    def __init__(self, config: AgentCheckConfig) -> None:
        super().__init__(config)
        self.port = config.port
        self.max_cpu = config.max_cpu_percent
        self.max_load1 = config.max_load1
        self.send = config.send.encode() if config.send is not None else None
        self.read_metrics = read_node_metrics
        # psutil's cpu_percent(None) measures since the previous call: prime it so
        # the first node probe has a real interval behind it.
        psutil.cpu_percent(interval=None)

    def describe(self) -> str:
        return "system_metrics agent"

    def _judge(self, cpu: float | None, load1: float | None, source: str) -> list[str]:
        problems = []
        if self.max_cpu is not None:
            if cpu is None:
                problems.append(f"{source} did not report cpu (max_cpu_percent is set)")
            elif cpu > self.max_cpu:
                problems.append(f"cpu {cpu:.1f}% > {self.max_cpu:g}%")
        if self.max_load1 is not None:
            if load1 is None:
                problems.append(f"{source} did not report load1 (max_load1 is set)")
            elif load1 > self.max_load1:
                problems.append(f"load1 {load1:.2f} > {self.max_load1:g}")
        return problems

    async def probe(self, backend: Backend | None) -> CheckResult:
        start = time.perf_counter()
        if backend is None:
            metrics = self.read_metrics()
            cpu, load1 = metrics.get("cpu"), metrics.get("load1")
            problems = self._judge(cpu, load1, "host")
            latency = time.perf_counter() - start
            if problems:
                return CheckResult(False, "; ".join(problems), latency)
            return CheckResult(True, f"cpu {cpu:.1f}%, load1 {load1:.2f}", latency)
        host, port = self.target(backend)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return CheckResult(
                False, f"agent connect failed: {exc.strerror or exc}", time.perf_counter() - start
            )
        try:
            if self.send:
                writer.write(self.send)
                await writer.drain()
            line = await _read_line(reader)
        except OSError as exc:
            return CheckResult(
                False, f"agent connection error: {exc.strerror or exc}", time.perf_counter() - start
            )
        finally:
            await close_writer(writer)
        latency = time.perf_counter() - start
        return self.judge_reply(line, latency)

    def judge_reply(self, line: str, latency: float = 0.0) -> CheckResult:
        if not line.strip():
            return CheckResult(False, "agent closed the connection without a reply", latency)
        parsed = parse_agent_reply(line)
        recognised = (
            parsed["status"]
            or parsed["admin_state"]
            or parsed["weight_percent"] is not None
            or parsed["cpu"] is not None
            or parsed["load1"] is not None
        )
        if not recognised:
            return CheckResult(False, f"unrecognised agent reply {clip(line, 80)!r}", latency)
        problems = self._judge(parsed["cpu"], parsed["load1"], "agent")
        if parsed["status"] == "down":
            detail = f": {parsed['reason']}" if parsed["reason"] else ""
            problems.insert(0, f"agent says down{detail}")
        return CheckResult(
            ok=not problems,
            reason="; ".join(problems) if problems else f"agent: {clip(line, 80)}",
            latency=latency,
            weight_percent=parsed["weight_percent"],
            admin_state=parsed["admin_state"],
        )


async def _read_line(reader: asyncio.StreamReader) -> str:
    """One line (or everything up to EOF), at most MAX_LINE bytes."""
    data = b""
    while len(data) < MAX_LINE and b"\n" not in data:
        chunk = await reader.read(MAX_LINE - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")
