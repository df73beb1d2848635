"""`custom_script` check: run an operator's command; exit status 0 means healthy.

HAProxy's `external-check command` (same environment idea: the target's address in
variables) and Nagios-style plugins. The command comes from the config file only; the
admin API never supplies one. It runs without a shell (a string is split like a shell
would, with `shlex`), in its own session, so that on timeout or cancellation the whole
process group is killed (SIGKILL): a hung script and the children it started are gone
at its timeout. A child that calls `setsid` itself escapes the group and is not killed.

Environment: the daemon's, then the check's `env`, then HAPROXYD_BACKEND_HOST,
HAPROXYD_BACKEND_PORT, HAPROXYD_BACKEND_ID and HAPROXYD_POOL (absent for a node check).
Cost: one fork/exec per probe; keep intervals of script checks long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from typing import TYPE_CHECKING

from haproxyd.health.base import Check, CheckResult, clip, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import CustomScriptCheck as ScriptCheckConfig

MAX_OUTPUT = 4096  # bytes of stdout/stderr kept for the reason


@register
class ScriptCheck(Check):
    type = "custom_script"
    node_capable = True

    def __init__(self, config: ScriptCheckConfig) -> None:
        super().__init__(config)
        command = config.command
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("custom_script: empty command")
        self.env = dict(config.env)
        self.timeout = config.timeout

    def describe(self) -> str:
        return f"custom_script {os.path.basename(self.argv[0])}"

    def environment(self, backend: Backend | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        if backend is not None:
            host, port = self.target(backend)
            env.update(
                HAPROXYD_BACKEND_HOST=host,
                HAPROXYD_BACKEND_PORT=str(port),
                HAPROXYD_BACKEND_ID=backend.id,
                HAPROXYD_POOL=backend.pool_name,
            )
        return env

    async def probe(self, backend: Backend | None) -> CheckResult:
        start = time.perf_counter()
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.environment(backend),
                start_new_session=True,  # its own process group, killed as a whole
            )
        )
        try:
            proc = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # The script may already run while the pipes are being set up: let the
            # spawn finish, then kill it, or it would outlive its timeout.
            with contextlib.suppress(Exception):
                await _kill_group(await spawn)
            raise
        except OSError as exc:
            return CheckResult(False, f"cannot run {self.argv[0]}: {exc.strerror or exc}")
        try:
            # The scheduler cancels us at the check's timeout; the same bound applies
            # when a caller probes directly.
            async with asyncio.timeout(self.timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            await _kill_group(proc)
            return CheckResult(
                False, f"timed out after {self.timeout:g}s, killed", time.perf_counter() - start
            )
        finally:
            if proc.returncode is None:
                await _kill_group(proc)
        latency = time.perf_counter() - start
        text = clip(output[:MAX_OUTPUT]) if output else ""
        if proc.returncode == 0:
            return CheckResult(True, text or "exit 0", latency)
        code = proc.returncode
        status = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        return CheckResult(False, f"{status}: {text}" if text else status, latency)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the script's process group and reap the script."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # Reaping cannot hang after SIGKILL; shielded so that a second cancellation still
    # lets the reap finish in the background (no zombie, no unclosed transport).
    await asyncio.shield(proc.wait())
